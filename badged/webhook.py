"""Forward badge-earned events to a webhook, at least once, from inside ``badged run``.

Each event is POSTed as the same JSON object ``badged listen`` prints, with

* ``X-Badged-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body with the shared secret;
* ``Idempotency-Key: badged-award-<award_id>``: the same key on every retry, so receivers dedupe;
* ``X-Badged-Event: badge-earned``.

Events come from a durable consumer group (default ``webhook``): a batch's position
advances only after every event of it got a 2xx. Failures (any answer but a 2xx, a
reply that is not HTTP, a connection error) are retried with backoff (capped at 30 s)
for as long as it takes; on shutdown the batch in hand is rolled back and sent again
next time (the idempotency key makes that harmless). Anything else ends the thread,
with ``failure`` set: the daemon reports it and starts a new forwarder.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import structlog

from badged import __version__
from badged.backoff import Backoff
from badged.errors import BadgedError, ConfigError
from badged.events import AwardEvent
from badged.listen import Subscription
from badged.metrics import Metrics
from badged.settings import Settings

log = structlog.get_logger("badged.webhook")

SIGNATURE_HEADER = "X-Badged-Signature"
REQUEST_TIMEOUT_S = 5.0


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read --webhook-secret-file {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"--webhook-secret-file {path} is empty")
    return secret


@dataclass(frozen=True)
class WebhookOptions:
    url: str
    secret: bytes
    group: str = "webhook"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {self.url!r} must be an http:// or https:// URL")


class _Stopped(Exception):
    """Raised inside the delivery loop to abandon the batch in hand on shutdown."""


class WebhookForwarder:
    """A thread that reads the group's events and POSTs each until it gets a 2xx."""

    def __init__(self, dsn: str, settings: Settings, options: WebhookOptions, metrics: Metrics) -> None:
        self.options = options
        self.metrics = metrics
        self._stop = threading.Event()
        self._subscription = Subscription(dsn, group=options.group, settings=settings, batch_size=100)
        self._thread = threading.Thread(target=self._run, name="badged-webhook", daemon=True)
        #: what ended the thread, if anything did (the daemon's supervisor then starts a new forwarder)
        self.failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        log.info("webhook.started", url=self.options.url, group=self.options.group)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._subscription.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._forward()
        except Exception as exc:
            self.failure = exc

    def _forward(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            events = iter(self._subscription)
            try:
                for event in events:
                    self._deliver(event)
            except _Stopped:
                pass
            except BadgedError as exc:  # e.g. badged's tables are not there yet: wait and try again
                delay = backoff.next_delay()
                log.error("webhook.failed", error=str(exc), retry_in=round(delay, 2))
                self._stop.wait(delay)
            finally:
                events.close()  # inside a batch this rolls it back: it is sent again later

    def _deliver(self, event: AwardEvent) -> None:
        body = event.to_json().encode()
        backoff = Backoff()
        while True:
            if self._stop.is_set():
                raise _Stopped
            status, error = self._post(event, body)
            if status is not None and 200 <= status < 300:
                self.metrics.events_delivered.labels("webhook").inc()
                self.metrics.event_lag.set(max(0.0, time.time() - event.awarded_at.timestamp()))
                return
            delay = backoff.next_delay()
            self.metrics.event_failures.labels("webhook").inc()
            log.warning("webhook.retry", award_id=event.award_id, status=status, error=error,
                        retry_in=round(delay, 2))
            self._stop.wait(delay)

    def _post(self, event: AwardEvent, body: bytes) -> tuple[int | None, str | None]:
        request = urllib.request.Request(self.options.url, data=body, method="POST", headers={  # noqa: S310
            "Content-Type": "application/json",
            "User-Agent": f"badged/{__version__}",
            "X-Badged-Event": "badge-earned",
            SIGNATURE_HEADER: sign(self.options.secret, body),
            "Idempotency-Key": f"badged-award-{event.award_id}",
        })
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as reply:  # noqa: S310
                return int(reply.status), None
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, OSError) as exc:
            return None, str(getattr(exc, "reason", exc))
        except http.client.HTTPException as exc:  # not an HTTP reply (BadStatusLine, IncompleteRead, ...)
            return None, f"{type(exc).__name__}: {exc}"
