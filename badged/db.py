"""Connections: which DSN to use, how to open it, and how to talk about it safely.

Every connection badged opens has a statement and lock timeout, an
application_name, a connect timeout, and TCP keepalives plus ``tcp_user_timeout``
(unless the DSN sets its own), so a peer that vanished is noticed in about half a
minute instead of when the kernel gives up (~15 min). Errors are translated into
badged's tree by SQLSTATE (``db_errors``) with the password scrubbed from every
message.

Nothing on the client bounds a wait on a network that stalls without failing (a
hung proxy still acknowledges every packet), so whoever must not wait forever cuts
the connection with ``sever``, and ``connect`` gives up when its *stop* is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import conninfo, sql

from badged.db_errors import translate
from badged.errors import ConfigError, ConnectionFailed
from badged.settings import Settings

APPLICATION_NAME = "badged"
CONNECT_TIMEOUT_S = 10
#: libpq's TCP settings, each used unless the DSN sets it: an idle connection whose peer vanished is
#: dropped after 15 s + 3 probes 5 s apart; data left unacknowledged for 30 s drops it too.
TCP_DEFAULTS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)(?=@)", re.I)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>password\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|\S+)", re.I)


def resolve_dsn(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """--dsn, else BADGED_DSN, else DATABASE_URL, else '' (libpq then reads PG* variables)."""
    for value in (flag, environ.get("BADGED_DSN"), environ.get("DATABASE_URL")):
        if value:
            return value
    return ""


def passwords_in(dsn: str) -> list[str]:
    found = [m.group("password") for m in _URL_PASSWORD.finditer(dsn)]
    found += [m.group("password").strip("'") for m in _KEYWORD_PASSWORD.finditer(dsn)]
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    if isinstance(password, str):
        found.append(password)
    return sorted({p for p in found if p}, key=len, reverse=True)


def scrub(message: str, dsn: str) -> str:
    """*message* with any password from *dsn* (or any DSN-looking password) replaced by ***."""
    for password in passwords_in(dsn):
        message = message.replace(password, "***")
    message = _URL_PASSWORD.sub(r"\g<head>***", message)
    return _KEYWORD_PASSWORD.sub(r"\g<head>***", message)


def describe(dsn: str) -> str:
    """A DSN fit for logs: the password never appears."""
    return scrub(dsn, dsn) if dsn else "(libpq defaults: PGHOST, PGDATABASE, ...)"


def connect(dsn: str, settings: Settings, *, autocommit: bool = True,
            stop: threading.Event | None = None) -> psycopg.Connection[Any]:
    """Open a connection with badged's timeouts, or raise ConfigError/ConnectionFailed.

    With *stop*, give up (ConnectionFailed) as soon as it is set, instead of waiting out connect_timeout.
    """
    target = _target(dsn)
    try:
        conn = _open(target) if stop is None else _open_unless(target, stop)
    except psycopg.Error as exc:
        raise connect_failed(exc, dsn) from None
    try:
        conn.execute(_TIMEOUTS, _timeouts(settings))
    except psycopg.Error as exc:
        conn.close()
        raise _configure_failed(exc, dsn) from None
    conn.autocommit = autocommit
    return conn


async def connect_async(dsn: str, settings: Settings) -> psycopg.AsyncConnection[Any]:
    """``connect`` for asyncio, in autocommit: cancelling the awaiting task abandons the attempt."""
    try:
        conn = await psycopg.AsyncConnection.connect(_target(dsn), autocommit=True)
    except psycopg.Error as exc:
        raise connect_failed(exc, dsn) from None
    try:
        await conn.execute(_TIMEOUTS, _timeouts(settings))
    except psycopg.Error as exc:
        await conn.close()
        raise _configure_failed(exc, dsn) from None
    return conn


_TIMEOUTS = ("SELECT pg_catalog.set_config('statement_timeout', %s, false),"
             " pg_catalog.set_config('lock_timeout', %s, false)")


def _timeouts(settings: Settings) -> tuple[str, str]:
    return f"{settings.statement_timeout_ms}ms", f"{settings.lock_timeout_ms}ms"


def _target(dsn: str) -> str:
    """*dsn* with badged's defaults for what it does not set (see the module docstring)."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"the database DSN is malformed: {scrub(str(exc), dsn)}") from None
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    for name, value in TCP_DEFAULTS.items():
        params.setdefault(name, value)
    return conninfo.make_conninfo("", **params)


def connect_failed(exc: psycopg.Error, dsn: str) -> Exception:
    """The error to raise when connecting to *dsn* failed with *exc* (its password scrubbed)."""
    unnamed = "" if dsn else "no --dsn, BADGED_DSN or DATABASE_URL was given, and libpq's defaults failed: "
    return translate(exc, "connect to the database", detail=f"{unnamed}{_first_line(scrub(str(exc), dsn))}")


def _configure_failed(exc: psycopg.Error, dsn: str) -> Exception:
    return translate(exc, "configure the connection", detail=_first_line(scrub(str(exc), dsn)))


def set_local_search_path(conn: psycopg.Connection[Any], schemas: tuple[str, ...]) -> None:
    """``SET LOCAL search_path`` to *schemas* (quoted as identifiers): how conditions are evaluated outside a
    trigger (backfill, recheck, explain, reconcile's PREPARE check) with the trigger function's own path."""
    path = sql.SQL(", ").join(map(sql.Identifier, schemas)).as_string(conn)
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (path,))


def sever(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Cut *conn*'s socket, from any thread: whatever waits on it (even through a stalled network) fails at once.

    Unlike ``close()``, it neither sends anything nor frees what another thread is using: the socket is
    shut down, so the blocked call sees end-of-file and raises, and its owner closes the connection.
    """
    with contextlib.suppress(psycopg.Error, OSError, ValueError):
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


def _open(target: str) -> psycopg.Connection[Any]:
    return psycopg.connect(target, autocommit=True)


def _open_unless(target: str, stop: threading.Event) -> psycopg.Connection[Any]:
    """``_open`` in a helper thread, abandoned when *stop* is set (it closes what it opens too late)."""
    done = threading.Event()
    outcome: list[psycopg.Connection[Any] | psycopg.Error] = []
    lock = threading.Lock()

    def attempt() -> None:
        try:
            result: psycopg.Connection[Any] | psycopg.Error = _open(target)
        except psycopg.Error as exc:
            result = exc
        with lock:
            if done.is_set() and isinstance(result, psycopg.Connection):
                result.close()  # abandoned: nobody will use it
            outcome.append(result)
            done.set()

    threading.Thread(target=attempt, name="badged-connect", daemon=True).start()
    while not done.wait(0.05):
        if stop.is_set():
            with lock:
                if not done.is_set():
                    done.set()
                    raise ConnectionFailed("cannot connect to the database: given up, stopping")
    result = outcome[0]
    if isinstance(result, psycopg.Error):
        raise result
    return result


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else "unknown error"
