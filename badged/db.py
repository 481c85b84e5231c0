"""Connections: which DSN to use, how to open it, and how to talk about it safely.

Every connection badged opens has a statement and lock timeout, an
application_name, and a connect timeout. Errors are translated into badged's
tree (``errors``) with the password scrubbed from every message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import conninfo

from badged.errors import ConfigError, ConnectionFailed
from badged.settings import Settings

APPLICATION_NAME = "badged"
CONNECT_TIMEOUT_S = 10

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


def connect(dsn: str, settings: Settings, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """Open a connection with badged's timeouts, or raise ConfigError/ConnectionFailed."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"the database DSN is malformed: {scrub(str(exc), dsn)}") from None
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        conn = psycopg.connect(conninfo.make_conninfo("", **params), autocommit=True)
    except psycopg.Error as exc:
        unnamed = "" if dsn else "no --dsn, BADGED_DSN or DATABASE_URL was given, and libpq's defaults failed: "
        raise ConnectionFailed(
            f"cannot connect to the database: {unnamed}{_first_line(scrub(str(exc), dsn))}") from None
    try:
        conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, false),"
                     " pg_catalog.set_config('lock_timeout', %s, false)",
                     (f"{settings.statement_timeout_ms}ms", f"{settings.lock_timeout_ms}ms"))
    except psycopg.Error as exc:
        conn.close()
        raise ConnectionFailed(f"cannot configure the connection: {_first_line(scrub(str(exc), dsn))}") from None
    conn.autocommit = autocommit
    return conn


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else "unknown error"
