"""The ``nats`` sink: every badge-earned event published to a NATS JetStream stream, acknowledged.

``badged run --sink nats://[USER:PASSWORD@]HOST:PORT/SUBJECT[?stream=NAME&duplicate_window=SECONDS]``
(``tls://`` for a server that requires TLS; ``nats://TOKEN@HOST`` for token auth). Each event is the
JSON object ``badged listen`` prints, published on SUBJECT with the header
``Nats-Msg-Id: badged-award-<award_id>``.

Exactly once in the stream, on top of badged's at-least-once delivery: the forwarder sends an
event again after a crash or a lost acknowledgement, and JetStream drops a message whose
``Nats-Msg-Id`` it stored within the stream's duplicate window, answering with a PubAck
marked ``duplicate``. So the window must outlast the longest gap between two sends of one
award: a retry, or a restart of badged (a crash, a rollout, a pod rescheduled, a
CrashLoopBackOff that waits up to 5 minutes). badged creates its stream with a 10-minute
window (never less than 2), and warns about an existing stream with a shorter one.

``__aenter__`` connects and makes sure a stream stores SUBJECT: the stream NAME (default
``BADGED``) is created with ``subjects=[SUBJECT]`` when missing and used as it is when it exists;
a stream that does not store SUBJECT, or an account that may not create streams, is a
``ConfigError`` saying what to do. A server that does not answer is a ``TemporaryError``.

``send`` reports, per event (see ``badged.sinks``):

* delivered once JetStream acknowledged it (stored now or within the window before);
* retry on a timeout, no stream answering, a lost connection (nats-py reconnects on its own,
  forever, every 2 s), a JetStream 5xx;
* park when JetStream refuses the message itself (larger than the server's ``max_payload`` or
  the stream's ``max_msg_size``, any other 4xx).

A connection nats-py closed for good (the server sent an error such as an authorization
violation) makes ``send`` raise ``TemporaryError``: the forwarder ends and ``badged run`` starts
a new sink, which connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StreamConfig, StreamInfo

from badged.errors import ConfigError, TemporaryError
from badged.events import AwardEvent
from badged.logs import get_logger
from badged.sinks import Delivery
from badged.sinks.nats_url import MIN_DUPLICATE_WINDOW_S, NatsOptions, parse_url

log = get_logger("badged.sinks.nats")

T = TypeVar("T")


#: One attempt to reach the server (TCP, TLS, INFO/CONNECT); nats-py takes whole seconds.
CONNECT_TIMEOUT_S = 2
#: What __aenter__ waits at most for the first connection before giving up with a TemporaryError.
CONNECT_DEADLINE_S = 5.0
RECONNECT_WAIT_S = 2
#: A dead TCP connection is noticed after about two unanswered pings (nats-py's default is 2 minutes each).
PING_INTERVAL_S = 10
#: How long a publish waits for its PubAck, and a JetStream API request for its answer.
ACK_TIMEOUT_S = 5.0
API_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 5

MSG_ID_HEADER = "Nats-Msg-Id"
#: What nats-py writes around the headers of a message (``NATS/1.0\r\n`` ... ``\r\n``), counted in max_payload.
_HEADER_FRAME_BYTES = len(b"NATS/1.0\r\n\r\n")
#: JetStream status codes that mean "not now" (the rest of 4xx mean "never as it is").
_TEMPORARY_CODES = frozenset({408, 429})
#: JetStream error code: JetStream is not enabled for the account (a 503 that no retry fixes).
_JS_NOT_ENABLED_FOR_ACCOUNT = 10039

#: nats-py errors raised while the connection is down and being re-established.
_DISCONNECTED = (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError,
                 nats.errors.StaleConnectionError, nats.errors.ConnectionDrainingError)
#: Errors on connecting that no retry fixes (nats-py reports a refused CONNECT as a plain Error, hence the text).
_REFUSED_FOR_GOOD = (nats.errors.AuthorizationError, nats.errors.SecureConnRequiredError,
                     nats.errors.SecureConnWantedError)
_REFUSED_FOR_GOOD_TEXT = "authorization violation"


def message_id(event: AwardEvent) -> str:
    """The ``Nats-Msg-Id`` of *event*: the same on every send, so JetStream stores it once per window."""
    return f"badged-award-{event.award_id}"


class NatsSink:
    """Publishes each event to JetStream and reports it delivered once acknowledged (see the module docstring).

    ``send`` may be called concurrently (the forwarder's follow and replay loops share a sink).
    """

    kind = "nats"

    def __init__(self, options: NatsOptions, *, ack_timeout: float = ACK_TIMEOUT_S,
                 connect_deadline: float = CONNECT_DEADLINE_S) -> None:
        self.options = options
        self.ack_timeout = ack_timeout
        self.connect_deadline = connect_deadline
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        #: set while __aenter__ waits for the first connection: the first error it meets ends the wait
        self._first_error: asyncio.Future[Exception] | None = None
        #: the latest "permissions violation" the server reported: a denied request only times out
        self._denied: str | None = None
        self._closing = False
        #: between a disconnection and the reconnection: every failed attempt (each 2 s) is then only a debug line
        self._down = False

    @classmethod
    def from_url(cls, url: str) -> NatsSink:
        return cls(parse_url(url))

    @property
    def description(self) -> str:
        return self.options.description

    async def __aenter__(self) -> Self:
        self._closing = self._down = False
        self._denied = None
        client = await self._connect()
        js = client.jetstream(timeout=API_TIMEOUT_S)
        try:
            await self._ensure_stream(js)
        except BaseException:
            await self._close(client)
            raise
        self._client, self._js = client, js
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None:
            await self._close(client)

    async def send(self, event: AwardEvent) -> Delivery:
        client, js = self._client, self._js
        if client is None or js is None:
            raise RuntimeError("NatsSink.send outside `async with sink:`")
        if client.is_closed:
            raise self._closed(client)
        body = event.to_json().encode()
        headers = {MSG_ID_HEADER: message_id(event)}
        size = len(body) + _headers_size(headers)
        if size > client.max_payload:
            # checked here, not left to the server: it answers an oversized message by closing the connection
            return Delivery.park(f"message of {size} bytes exceeds the server's max_payload of {client.max_payload}")
        try:
            ack = await js.publish(self.options.subject, body, headers=headers, timeout=self.ack_timeout)
        except nats.errors.ConnectionClosedError:
            raise self._closed(client) from None
        except nats.errors.MaxPayloadError:
            return Delivery.park(f"message exceeds the server's max_payload of {client.max_payload} bytes")
        except nats.js.errors.NoStreamResponseError:
            return Delivery.retry(f"no JetStream stream stores {self.options.subject!r} (was stream "
                                  f"{self.options.stream} deleted?)")
        except nats.errors.TimeoutError:
            return Delivery.retry(self._timeout_reason())
        except _DISCONNECTED:
            return Delivery.retry(f"not connected to NATS at {self.options.server} (reconnecting)")
        except nats.js.errors.APIError as exc:
            return _api_delivery(exc)
        _log_ack(event, ack)
        return Delivery.delivered()

    # -- connecting -------------------------------------------------------------------------

    async def _connect(self) -> Client:
        """A connected client, or TemporaryError/ConfigError from the first failed attempt.

        nats-py's connect() retries an unreachable server as long as it would reconnect
        (forever, here); badged wants the first failure instead, so that ``badged run``
        retries with its own backoff and says why.
        """
        client = Client()
        loop = asyncio.get_running_loop()
        self._first_error = first_error = loop.create_future()
        connecting = asyncio.ensure_future(self._start_connecting(client))
        try:
            await asyncio.wait({connecting, first_error}, timeout=self.connect_deadline,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._first_error = None
        if connecting.done():
            error = connecting.exception()
            if error is None:
                return client
            if not isinstance(error, OSError | nats.errors.Error | asyncio.TimeoutError):
                raise error  # not about reaching the server: a bug
            await self._close(client)
            raise self._unreachable(error)
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await self._close(client)
        raise self._unreachable(first_error.result() if first_error.done() else None)

    def _start_connecting(self, client: Client) -> Coroutine[Any, Any, None]:
        options = self.options
        return client.connect(
            servers=[options.server], name="badged", user=options.user, password=options.password,
            token=options.token, connect_timeout=CONNECT_TIMEOUT_S, reconnect_time_wait=RECONNECT_WAIT_S,
            max_reconnect_attempts=-1,  # never give up: the forwarder retries each event meanwhile
            ping_interval=PING_INTERVAL_S, drain_timeout=DRAIN_TIMEOUT_S,
            # no buffering while disconnected: a publish then fails at once (retry) instead of waiting for its ack
            pending_size=0,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected, closed_cb=self._on_closed,
        )

    async def _close(self, client: Client) -> None:
        self._closing = True  # the callbacks then stay quiet: this disconnection is ours
        if client.is_connected:
            # nothing should be in flight (each send awaited its ack): drain is only the polite goodbye
            with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                await client.drain()
        await client.close()  # a no-op after a drain; ends the reconnecting or never-connected client otherwise

    def _unreachable(self, error: Exception | None) -> ConfigError | TemporaryError:
        where = self.options.server
        if error is None:
            return TemporaryError(f"cannot connect to NATS at {where}: no connection within "
                                  f"{self.connect_deadline:g} s")
        if isinstance(error, _REFUSED_FOR_GOOD) or _REFUSED_FOR_GOOD_TEXT in str(error).lower():
            return ConfigError(f"NATS at {where} refused the connection ({_text(error)}): check the credentials "
                               "and the scheme (tls:// when the server requires TLS)")
        timed_out = isinstance(error, asyncio.TimeoutError)
        why = f"no answer within {CONNECT_TIMEOUT_S} s" if timed_out else _text(error)
        return TemporaryError(f"cannot connect to NATS at {where}: {why}")

    def _closed(self, client: Client) -> TemporaryError:
        error = client.last_error
        why = f": {_text(error)}" if error is not None else ""
        return TemporaryError(f"the connection to NATS at {self.options.server} was closed{why}")

    async def _on_error(self, error: Exception) -> None:
        if self._first_error is not None:
            if not self._first_error.done():
                self._first_error.set_result(error)
            return
        if "permissions violation" in str(error):
            self._denied = str(error).removeprefix("nats: ")
        report = log.debug if self._down else log.warning
        report("nats.error", server=self.options.server, error=_text(error))

    async def _on_disconnected(self) -> None:
        if not self._closing and self._first_error is None:
            self._down = True
            log.warning("nats.disconnected", server=self.options.server)

    async def _on_reconnected(self) -> None:
        self._down = False
        log.info("nats.reconnected", server=self.options.server)

    async def _on_closed(self) -> None:
        if not self._closing and self._first_error is None and self._client is not None:
            error = self._client.last_error
            log.warning("nats.closed", server=self.options.server, error=_text(error) if error else None)

    # -- the stream -------------------------------------------------------------------------

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Make sure stream ``options.stream`` stores ``options.subject``: create it, or use it as it is."""
        options = self.options
        owner = await self._admin(_unless_missing(js.find_stream_name_by_subject(options.subject)),
                                  f"look up the stream of subject {options.subject}")
        if owner is not None and owner != options.stream:
            raise ConfigError(f"NATS subject {options.subject!r} is stored by JetStream stream {owner!r}, not "
                              f"{options.stream!r}: add ?stream={owner} to the sink URL, or publish on another "
                              "subject")
        info = await self._admin(_unless_missing(js.stream_info(options.stream)), f"read stream {options.stream}")
        if info is None:
            await self._create_stream(js)
        elif owner is None:
            raise ConfigError(f"JetStream stream {options.stream!r} exists but does not store subject "
                              f"{options.subject!r}: add the subject to it (nats stream edit {options.stream} "
                              f"--subjects ...), or name another stream with ?stream=NAME")
        else:
            self._check_existing(info)

    async def _create_stream(self, js: JetStreamContext) -> None:
        options = self.options
        config = StreamConfig(name=options.stream, subjects=[options.subject],
                              duplicate_window=options.duplicate_window,
                              description="badge-earned events published by badged")
        await self._admin(js.add_stream(config), f"create stream {options.stream}")
        log.info("nats.stream_created", stream=options.stream, subject=options.subject,
                 duplicate_window=options.duplicate_window)

    def _check_existing(self, info: StreamInfo) -> None:
        """A stream someone else made is used as it is, unless badged cannot work with it."""
        config, name = info.config, self.options.stream
        if config.no_ack:
            raise ConfigError(f"JetStream stream {name!r} has no_ack set: badged needs an acknowledgement for every "
                              "event; turn no_ack off or name another stream with ?stream=NAME")
        if config.sealed:
            raise ConfigError(f"JetStream stream {name!r} is sealed: it accepts no more messages")
        if config.duplicate_window < MIN_DUPLICATE_WINDOW_S:
            log.warning("nats.short_duplicate_window", stream=name, duplicate_window=config.duplicate_window,
                        advice=f"at least {MIN_DUPLICATE_WINDOW_S:.0f} s, or a restart of badged may store an "
                               "award twice")

    async def _admin(self, request: Awaitable[T], what: str) -> T:
        """Await a JetStream API request of __aenter__, turning its failures into ConfigError or TemporaryError."""
        try:
            return await request
        except nats.errors.TimeoutError:
            if self._denied is not None:  # a denied request gets no answer, only this error on the side
                raise ConfigError(f"NATS denied badged's request to {what} ({self._denied}): grant the permission, "
                                  f"or create stream {self.options.stream} with subject {self.options.subject} "
                                  "yourself") from None
            raise TemporaryError(f"JetStream did not answer (to {what}) within {API_TIMEOUT_S:g} s") from None
        except nats.js.errors.ServiceUnavailableError as exc:
            if exc.err_code == _JS_NOT_ENABLED_FOR_ACCOUNT:
                raise ConfigError(f"JetStream is not enabled for this account on {self.options.server}: enable "
                                  "it in the server's account configuration") from None
            if exc.code is None:  # no responders: JetStream is off, or the server is still starting
                raise TemporaryError(f"JetStream does not answer on {self.options.server}: is it enabled "
                                     "(nats-server -js)?") from None
            raise TemporaryError(f"JetStream could not {what}: {exc.description}") from None
        except nats.js.errors.APIError as exc:
            if exc.code is not None and exc.code < 500:
                raise ConfigError(f"JetStream refused to {what}: {exc.description} (err_code {exc.err_code})"
                                  ) from None
            raise TemporaryError(f"JetStream could not {what}: {exc.description}") from None
        except (nats.errors.ConnectionClosedError, *_DISCONNECTED) as exc:
            raise TemporaryError(f"lost the connection to NATS at {self.options.server} (while trying to "
                                 f"{what}): {_text(exc)}") from None

    def _timeout_reason(self) -> str:
        reason = f"no acknowledgement from JetStream within {self.ack_timeout:g} s"
        if self._denied is not None and self.options.subject.lower() in self._denied:
            reason += f" ({self._denied})"
        return reason


async def _unless_missing(request: Awaitable[T]) -> T | None:
    """What *request* answers, or None for "not found" (no stream of that name, no stream for that subject)."""
    try:
        return await request
    except nats.js.errors.NotFoundError:
        return None


def _api_delivery(error: nats.js.errors.APIError) -> Delivery:
    """A JetStream API error answering a publish: 5xx and a few 4xx are temporary, the rest refuse the message."""
    reason = f"JetStream refused the message: {error.description} (code {error.code}, err_code {error.err_code})"
    if error.code is None or error.code >= 500 or error.code in _TEMPORARY_CODES:
        return Delivery.retry(reason, status=error.code)
    return Delivery.park(reason, status=error.code, response=error.description)


def _headers_size(headers: dict[str, str]) -> int:
    """The bytes *headers* take in a message, counted with the payload against the server's max_payload."""
    return _HEADER_FRAME_BYTES + sum(len(f"{key}: {value}\r\n".encode()) for key, value in headers.items())


def _log_ack(event: AwardEvent, ack: PubAck) -> None:
    if ack.duplicate:
        log.debug("nats.duplicate", award_id=event.award_id, stream=ack.stream, seq=ack.seq)


def _text(error: BaseException) -> str:
    return str(error).removeprefix("nats: ") or type(error).__name__
