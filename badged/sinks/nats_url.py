"""The NATS sink's URL: ``nats://[USER:PASSWORD@]HOST:PORT/SUBJECT[?stream=NAME&duplicate_window=SECONDS]``. Pure.

Parsed once, at start-up, into ``NatsOptions``; every error is a ``ConfigError`` that never repeats the
URL (it may hold a password). Why the duplicate window has a floor: see ``badged.sinks.nats``.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from badged.errors import ConfigError

SCHEMES = ("nats", "tls")
DEFAULT_PORT = 4222
DEFAULT_STREAM = "BADGED"
#: JetStream's own default, and the least badged accepts: shorter would not cover a restart of badged.
MIN_DUPLICATE_WINDOW_S = 120.0
#: Covers a crash plus a CrashLoopBackOff of up to 5 minutes. Not longer: the server keeps the id of every
#: message of the window in memory, a cost that grows with the award rate.
DEFAULT_DUPLICATE_WINDOW_S = 600.0
QUERY_KEYS = ("stream", "duplicate_window")
_STREAM_NAME_FORBIDDEN = frozenset(".*>/\\") | frozenset(string.whitespace)


@dataclass(frozen=True)
class NatsOptions:
    """Where the sink publishes, parsed from its URL (``parse_url``)."""

    host: str
    #: the subject every event is published on (the URL's path)
    subject: str
    port: int = DEFAULT_PORT
    #: the JetStream stream that must hold *subject* (``?stream=``); created when missing
    stream: str = DEFAULT_STREAM
    #: seconds the server remembers a Nats-Msg-Id to drop a re-sent event (``?duplicate_window=``)
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_S
    #: ``tls://`` URL
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def server(self) -> str:
        """The server's URL, without credentials (they go to nats-py as options)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls' if self.tls else 'nats'}://{host}:{self.port}"

    @property
    def description(self) -> str:
        return f"{self.server}/{self.subject} (stream {self.stream})"


def parse_url(url: str) -> NatsOptions:
    """``nats://[USER:PASSWORD@|TOKEN@]HOST[:PORT]/SUBJECT[?stream=NAME&duplicate_window=SECONDS]``.

    Error messages never repeat the URL: it may hold a password.
    """
    try:
        parts = urlsplit(url)
        port = DEFAULT_PORT if parts.port is None else parts.port
    except ValueError as exc:
        raise ConfigError(f"the NATS sink URL is malformed ({exc})") from None
    if port == 0:
        raise ConfigError("the NATS sink URL's port must be between 1 and 65535")
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"the NATS sink URL must start with nats:// or tls://, not {parts.scheme or '(none)'}://")
    if not parts.hostname:
        raise ConfigError("the NATS sink URL names no host: nats://HOST:PORT/SUBJECT")
    if parts.fragment:
        raise ConfigError("the NATS sink URL must not have a #fragment")
    user, password, token = _credentials(parts.username, parts.password)
    query = _query(parts.query)
    return NatsOptions(
        host=parts.hostname, port=port, subject=_subject(parts.path), tls=parts.scheme == "tls",
        stream=_stream_name(query.get("stream", DEFAULT_STREAM)),
        duplicate_window=_duplicate_window(query.get("duplicate_window")),
        user=user, password=password, token=token,
    )


def _credentials(user: str | None, password: str | None) -> tuple[str | None, str | None, str | None]:
    """(user, password, token): a user without a password is a token, as in nats-py's own URLs."""
    if not user:
        return None, None, None
    if password is None:
        return None, None, unquote(user)
    return unquote(user), unquote(password), None


def _query(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"the NATS sink URL's query is malformed: use ?{'&'.join(QUERY_KEYS)}") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key not in QUERY_KEYS:
            raise ConfigError(f"the NATS sink URL has an unknown parameter {key!r}: it takes {', '.join(QUERY_KEYS)}")
        if key in values:
            raise ConfigError(f"the NATS sink URL gives {key!r} twice")
        values[key] = value
    return values


def _subject(path: str) -> str:
    """The path without its leading slash, a literal subject: dot-separated tokens, no wildcard."""
    subject = unquote(path.removeprefix("/"))
    if not subject:
        raise ConfigError("the NATS sink URL names no subject: nats://HOST:PORT/SUBJECT (e.g. /badges.earned)")
    if any(c in subject for c in "*>"):
        raise ConfigError(f"the NATS subject {subject!r} has a wildcard: badged publishes on one literal subject")
    if any(c in string.whitespace for c in subject) or "" in subject.split("."):
        raise ConfigError(f"the NATS subject {subject!r} is invalid: dot-separated tokens, none empty, no spaces")
    return subject


def _stream_name(name: str) -> str:
    if not name or any(c in _STREAM_NAME_FORBIDDEN for c in name):
        raise ConfigError(f"the JetStream stream name {name!r} is invalid: not empty, no '.', '*', '>', '/', "
                          "'\\' or spaces")
    return name


def _duplicate_window(text: str | None) -> float:
    if text is None:
        return DEFAULT_DUPLICATE_WINDOW_S
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"the NATS sink's duplicate_window {text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < MIN_DUPLICATE_WINDOW_S:
        raise ConfigError(f"the NATS sink's duplicate_window must be at least {MIN_DUPLICATE_WINDOW_S:.0f} s, "
                          f"not {text}: a shorter one would store an award twice when badged restarts")
    return seconds
