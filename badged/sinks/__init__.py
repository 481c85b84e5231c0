"""Where badge-earned events go: one small interface, one module per destination.

A sink takes one event at a time and says what became of it (``Delivery``):

* ``DELIVERED``: the destination has it (a 2xx, a JetStream ack, a line written);
* ``RETRY``: not now (a timeout, a 503, a 429, a broker that is down); the forwarder
  tries the same event again with backoff, honouring ``retry_after``, and nothing
  after it is sent meanwhile, so order is kept;
* ``PARK``: never as it is (a 400, a 410, a redirect, a message too large); the
  forwarder keeps it in badged's ``parked_event`` table and goes on with the next.

``badged.forwarder`` runs a sink from a durable consumer group (the position advances
only after each event of a batch is delivered or parked). Sinks are async context
managers: ``__aenter__`` opens connections (and raises ``ConfigError`` for what no retry
fixes), ``__aexit__`` closes them. An exception from ``send`` is a bug or an outage the
sink did not foresee: the forwarder's task ends and ``badged run`` starts a new one.

Sinks: ``webhook`` (HTTP POST, Standard Webhooks signatures), ``nats`` (JetStream),
``jsonlines`` (the printer of ``badged listen``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from badged.events import AwardEvent

#: The longest excerpt of a reply body kept with a parked event.
EXCERPT_CHARS = 1024


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PARK = "park"


@dataclass(frozen=True)
class Delivery:
    """What became of one attempt to send one event."""

    verdict: Verdict
    #: why it was not delivered, for logs and the parked table ("HTTP 410", "connection refused")
    reason: str = ""
    #: the destination's status code, when it has one (HTTP)
    status: int | None = None
    #: the start of the destination's answer (at most EXCERPT_CHARS)
    response: str | None = None
    #: the destination asked to wait this many seconds before the next attempt
    retry_after: float | None = None

    @classmethod
    def delivered(cls) -> Delivery:
        return _DELIVERED

    @classmethod
    def retry(cls, reason: str, *, status: int | None = None, response: str | None = None,
              retry_after: float | None = None) -> Delivery:
        return cls(Verdict.RETRY, reason, status, _excerpt(response), retry_after)

    @classmethod
    def park(cls, reason: str, *, status: int | None = None, response: str | None = None) -> Delivery:
        return cls(Verdict.PARK, reason, status, _excerpt(response))


#: every delivery is the same: one frozen instance, not one per event
_DELIVERED = Delivery(Verdict.DELIVERED)


class Sink(Protocol):
    """A destination for badge-earned events (see the module docstring)."""

    #: the ``sink`` label of the metrics: "webhook", "nats", "stdout"
    kind: str

    @property
    def description(self) -> str:
        """Where events go, fit for logs (no secret)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None: ...

    async def send(self, event: AwardEvent) -> Delivery: ...


def _excerpt(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
