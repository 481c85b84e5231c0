"""The webhook sink: POST each badge-earned event to a URL, signed the Standard Webhooks way.

The body is the event's JSON (``AwardEvent.to_json()``, the object ``badged listen`` prints).
Headers, per https://www.standardwebhooks.com/ (so receivers verify with any of its libraries):

* ``webhook-id: badged-award-<award_id>``: the same on every attempt: the receiver's idempotency key;
* ``webhook-timestamp``: unix seconds at this attempt (receivers refuse old ones: replays);
* ``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``.

The secret is the standard's ``whsec_`` + base64 of the key (``new_secret()`` makes one); any other
secret, such as a secret file from before, is the key's raw bytes, as ``Webhook(key_bytes)`` expects.

Legacy headers, kept because receivers written against earlier badged check them:

* ``X-Badged-Signature: sha256=<hex HMAC-SHA256 of the body alone, with the same key bytes>``;
* ``X-Badged-Event: badge-earned`` and ``Idempotency-Key: badged-award-<award_id>`` (as webhook-id).

Each attempt becomes a ``Delivery``: a 2xx is delivered; a 408, 429 or 5xx, a timeout, a refused or
broken connection, or a reply that is not HTTP is retried (honouring ``Retry-After``); anything else
is parked: other 4xx, 1xx, and every 3xx, because redirects are never followed (urllib turned the POST
into a GET and counted that GET's 200 as delivered; the spec says to fix the URL instead). An attempt
has 5 s to connect and 15 s in all (the spec recommends 15-30 s); a 2xx counts even if its body is late.

A ``user:password@`` in the URL is sent as HTTP Basic auth; ``description``, the URL as logs show it,
leaves it out, and the query too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import hmac
import math
import re
import secrets
import time
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import httpx

from badged.errors import ConfigError, describe_error
from badged.events import AwardEvent
from badged.logs import get_logger
from badged.sinks import EXCERPT_CHARS, Delivery
from badged.version import __version__

log = get_logger("badged.sinks.webhook")

SECRET_PREFIX = "whsec_"  # noqa: S105 (the standard's marker, not a secret)
#: 24 bytes (192 bits): the standard's minimum for a symmetric key
SECRET_BYTES = 24
#: the spec recommends 15-30 s so that slow receivers can still acknowledge
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: read at most this much of a reply: enough to drain a small 2xx (so keep-alive survives) and for an excerpt
_READ_LIMIT = 64 * 1024
#: a UTF-8 character is at most 4 bytes: this many bytes always decode to a full excerpt
_EXCERPT_BYTES = 4 * EXCERPT_CHARS + 4
_LOCATION_CHARS = 300
_DELTA_SECONDS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_RETRY_STATUSES = frozenset({408, 429})
#: what a failed attempt can raise that a later attempt may not: the network, the receiver's manners
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def read_secret(path: Path) -> bytes:
    """The secret in *path*, without surrounding whitespace (a trailing newline is not part of it)."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the webhook secret file {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"the webhook secret file {path} is empty")
    return secret


def signing_key(secret: bytes | str) -> bytes:
    """The HMAC key of *secret*: base64-decoded after ``whsec_``, else its raw bytes (a legacy secret)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    if raw.startswith(SECRET_PREFIX.encode()):
        encoded = raw[len(SECRET_PREFIX):]
        try:
            # padded here, as the standard's libraries do: some tools print base64 without it
            key = base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("the webhook secret is not valid base64 after 'whsec_'") from None
    else:
        key = raw
    if not key:
        raise ConfigError("the webhook secret is empty")
    return key


class WebhookSink:
    """POSTs events to one URL over one keep-alive HTTP client (see the module docstring)."""

    kind = "webhook"

    def __init__(self, url: str, secret: bytes | str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        if timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("the webhook timeouts must be more than 0 seconds")
        self._url = url  # not for logs: it may hold a password or a token (``description`` is for logs)
        self._description = _describe(url)
        self._key = signing_key(secret)
        #: the whole attempt, from connecting to the last byte read: a receiver that drips a byte at a
        #: time never trips httpx's per-read timeout, and must not hold the forwarder forever
        self.timeout = timeout
        self._timeouts = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_secret_file(cls, url: str, path: Path, *, timeout: float = DEFAULT_TIMEOUT_S,
                         connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> WebhookSink:
        """A sink whose secret is in the file *path* (``read_secret``): errors name the file."""
        secret = read_secret(path)
        try:
            signing_key(secret)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (read from {path})") from None
        return cls(url, secret, timeout=timeout, connect_timeout=connect_timeout)

    @property
    def description(self) -> str:
        return self._description

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(timeout=self._timeouts, follow_redirects=False,
                                         headers={"User-Agent": f"badged/{__version__}"})
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, event: AwardEvent) -> Delivery:
        if self._client is None:
            raise RuntimeError("WebhookSink.send() outside 'async with'")
        body = event.to_json().encode()
        request = self._client.build_request("POST", self._url, content=body, headers=self._headers(event, body))
        try:
            return await self._attempt(self._client, request)
        except TimeoutError:
            return Delivery.retry(f"no complete answer within {self.timeout:g} s")
        except _TRANSIENT_ERRORS as exc:
            return Delivery.retry(describe_error(exc))

    def _headers(self, event: AwardEvent, body: bytes) -> dict[str, str]:
        """The headers of one attempt: signed now, so that each retry carries a fresh timestamp."""
        message_id = f"badged-award-{event.award_id}"
        timestamp = str(int(time.time()))
        signed = f"{message_id}.{timestamp}.".encode() + body
        signature = base64.b64encode(hmac.digest(self._key, signed, hashlib.sha256)).decode("ascii")
        return {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": f"v1,{signature}",
            "X-Badged-Signature": "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest(),
            "X-Badged-Event": "badge-earned",
            "Idempotency-Key": message_id,
        }

    async def _attempt(self, client: httpx.AsyncClient, request: httpx.Request) -> Delivery:
        deadline = asyncio.get_running_loop().time() + self.timeout
        async with asyncio.timeout_at(deadline):
            response = await client.send(request, stream=True)
        body = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                await _read_into(response, body)
        except (TimeoutError, httpx.TransportError, httpx.DecodingError):
            pass  # the status line and headers arrived: they decide; the body is only an excerpt
        finally:
            await response.aclose()  # a body not read to its end closes the connection instead of reusing it
        return classify(response, _decode(response, body))


def classify(response: httpx.Response, excerpt: str | None) -> Delivery:
    """What the answer *response* (whose body starts with *excerpt*) makes of the attempt."""
    status = response.status_code
    if 200 <= status < 300:
        return Delivery.delivered()
    reason = f"HTTP {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
    if status in _RETRY_STATUSES or 500 <= status < 600:
        return Delivery.retry(reason, status=status, response=excerpt,
                              retry_after=_retry_after(response.headers.get("Retry-After")))
    if 300 <= status < 400:
        location = response.headers.get("Location")
        reason = f"HTTP {status} redirect to {location[:_LOCATION_CHARS]}" if location \
            else f"{reason} (redirects are not followed)"
    return Delivery.park(reason, status=status, response=excerpt)


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date); None if it is neither."""
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return max(0.0, float(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the zone is unknown; HTTP-dates are always UTC
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    seconds = parse_retry_after(value)
    if seconds is None:
        log.warning("webhook.retry_after_ignored", value=value[:100])
    return seconds


async def _read_into(response: httpx.Response, body: bytearray) -> None:
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _READ_LIMIT:
            return


def _decode(response: httpx.Response, body: bytearray) -> str | None:
    """The start of the reply as text, whatever its bytes: it is only read by people."""
    if not body:
        return None
    encoding = response.charset_encoding or "utf-8"
    try:
        return bytes(body[:_EXCERPT_BYTES]).decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        return bytes(body[:_EXCERPT_BYTES]).decode("utf-8", errors="replace")


def _describe(url: str) -> str:
    """*url* as logs may show it: no user:password@, no query or fragment (either may hold a token)."""
    # the URL itself is never echoed in the error: it may carry a password or a token
    problem = "the webhook URL must be an http:// or https:// URL with a host, like https://example.com/hooks"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number from 0 to 65535
        httpx.URL(url)  # what send() would otherwise raise on every attempt
    except (ValueError, httpx.InvalidURL):
        raise ConfigError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(problem)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
