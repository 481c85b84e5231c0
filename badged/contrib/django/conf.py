"""badged's Django settings, the DSN of a Django database, and badged's errors as ``CommandError``.

Settings (all optional except ``BADGED_BADGES`` for the commands):

===============================  ==================  ============================================================
``BADGED_BADGES``                (none)              path of badge.json (str or ``Path``); also ``BADGES_FILE``
``BADGED_DATABASE``              ``"default"``       alias in ``DATABASES`` whose database badged works on
``BADGED_SCHEMA``                ``"badged"``        schema of badged's tables (``award``, ``badge``) and functions
``BADGED_PREFIX``                ``"badged_"``       prefix of every trigger and function badged manages
``BADGED_CHANNEL``               ``"badge_earned"``  ``NOTIFY`` channel of new awards
``BADGED_ALLOW_EMPTY``           ``False``           accept an empty badge.json (which drops every badge)
``BADGED_LOCK_TIMEOUT``          ``3``               before reconcile gives up on a busy table
``BADGED_STATEMENT_TIMEOUT``     ``60``              on every connection badged opens
``BADGED_USER_ATTRIBUTE``        ``"awards"``        related name of ``Award.user`` on the user model; ``None``: none
``BADGED_RECONCILE_ON_MIGRATE``  ``False``           ``migrate`` ends with ``create_badge_triggers`` (its database)
===============================  ==================  ============================================================

The settings the CLI also has (prefix, schema, channel, allow-empty, the timeouts) go through the CLI's own
model, ``badged.settings.Options``: the same values mean the same thing (a timeout is ``3``, ``1.5``,
``"500ms"``, ``"90s"``, ``"5m"``; a boolean ``True``, ``"yes"``, ``"off"``, ...), and a bad one is refused with
the sentence ``badged`` prints for the environment variable, naming ``settings.BADGED_...``. ``None`` or
``""`` means the default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DatabaseError as DjangoDatabaseError
from psycopg import conninfo, pq

from badged.db import scrub
from badged.db_errors import message_of
from badged.errors import BadgedError, SpecError
from badged.log_output import configure_logging
from badged.settings import OptionsError, Settings, options_from
from badged.spec import Badge, load_badges

DEFAULT_DATABASE = "default"
DEFAULT_USER_ATTRIBUTE = "awards"
#: the Django settings that are also ``badged`` settings, read through ``badged.settings.Options``
SHARED_SETTINGS = ("BADGED_PREFIX", "BADGED_SCHEMA", "BADGED_CHANNEL", "BADGED_ALLOW_EMPTY", "BADGED_LOCK_TIMEOUT",
                   "BADGED_STATEMENT_TIMEOUT", "BADGED_ALLOW_VOLATILE")


@dataclass(frozen=True)
class DjangoSettings:
    """What badged's Django app reads from ``django.conf.settings``."""

    badges_file: Path | None
    database: str
    badged: Settings
    allow_empty: bool
    user_attribute: str | None
    reconcile_on_migrate: bool = False


def get_settings() -> DjangoSettings:
    """Read (and validate) badged's settings; bad values raise ``ImproperlyConfigured``, one line naming each."""
    try:
        options = options_from(settings_values(django_settings))
    except OptionsError as exc:
        raise ImproperlyConfigured("\n".join(f"badged: {line}" for line in exc.lines())) from None
    badges_file = _badges_file()
    attribute = getattr(django_settings, "BADGED_USER_ATTRIBUTE", DEFAULT_USER_ATTRIBUTE)
    if attribute is not None and (not isinstance(attribute, str) or not attribute.isidentifier()):
        raise ImproperlyConfigured(f"badged: settings.BADGED_USER_ATTRIBUTE={attribute!r} is not an identifier: "
                                   "write a Python name, or None to install no accessor")
    return DjangoSettings(
        badges_file=Path(badges_file) if badges_file else None,
        database=_text("BADGED_DATABASE", DEFAULT_DATABASE),
        badged=options.settings(),
        allow_empty=options.allow_empty,
        user_attribute=attribute or None,
        reconcile_on_migrate=_flag("BADGED_RECONCILE_ON_MIGRATE"),
    )


def _badges_file() -> str | os.PathLike[str] | None:
    """``BADGED_BADGES``, else the original's ``BADGES_FILE`` (both may be set only to the same path)."""
    given = {name: value for name in ("BADGED_BADGES", "BADGES_FILE")
             if (value := getattr(django_settings, name, None)) not in (None, "")}
    for name, value in given.items():
        if not isinstance(value, str | os.PathLike):
            raise ImproperlyConfigured(f"badged: settings.{name}={value!r} is not a path")
    if len({Path(value) for value in given.values()}) > 1:
        raise ImproperlyConfigured(f"badged: settings.BADGED_BADGES={given['BADGED_BADGES']!r} and "
                                   f"settings.BADGES_FILE={given['BADGES_FILE']!r} differ: keep BADGED_BADGES "
                                   "(BADGES_FILE is the original django-pg-badges' name)")
    return next(iter(given.values()), None)


def command_badges(options: dict[str, Any], *, allow_empty: bool | None = None
                   ) -> tuple[DjangoSettings, tuple[Badge, ...]]:
    """What every badged command starts with: log output set up, settings read, badge.json loaded."""
    configure_logs(options["verbosity"])
    conf = get_settings()
    path = badge_file_option(options, conf)
    with command_errors():
        badges = load_badges(path, prefix=conf.badged.prefix, schema=conf.badged.schema,
                             allow_empty=conf.allow_empty if allow_empty is None else allow_empty)
    return conf, badges


def add_database_arguments(parser: Any) -> None:
    """``--database`` and badge.json's ``--badges`` (``--file``, the original's name) of badged's commands."""
    parser.add_argument("--database", default=None,
                        help="alias in settings.DATABASES (default: settings.BADGED_DATABASE, else 'default')")
    parser.add_argument("--badges", default=None, metavar="PATH",
                        help="badge.json to read instead of settings.BADGED_BADGES")
    parser.add_argument("--file", default=None, metavar="PATH", help="the same as --badges (the original's name)")


def badge_file_option(options: dict[str, Any], conf: DjangoSettings) -> Path:
    """badge.json of a command: ``--badges`` / ``--file`` (``call_command(..., badges=...)`` or the original's
    ``file=``: a str or a path), else the settings'."""
    given = options.get("badges") or options.get("file")
    if given:
        return Path(given)
    if conf.badges_file is None:
        raise CommandError("settings.BADGED_BADGES is not set: point it at your badge.json (or pass --badges)")
    return conf.badges_file


def settings_values(settings: Any) -> dict[str, object]:
    """The shared ``BADGED_*`` settings *settings* (Django's, or any object) sets, by name."""
    return {name: getattr(settings, name) for name in SHARED_SETTINGS if getattr(settings, name, None) is not None}


def _flag(name: str) -> bool:
    value = getattr(django_settings, name, False)
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"badged: settings.{name}={value!r} is not True or False")
    return value


def _text(name: str, default: str) -> str:
    value = getattr(django_settings, name, None)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"badged: settings.{name}={value!r} is not a string: write a DATABASES alias")
    return value


def qualified_table(table: str) -> str:
    """``db_table`` for one of badged's tables: ``"<schema>"."<table>"``.

    Django's PostgreSQL backend leaves a name that starts and ends with a double quote as it
    is, so the ORM writes ``"badged"."award"`` wherever it names the table. The schema is a
    plain lower-case identifier (``Settings`` validates it), so nothing needs escaping.
    """
    return f'"{get_settings().badged.schema}"."{table}"'


@cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _postgresql(alias: str) -> Any:
    """Django's connection object of *alias*, which must be PostgreSQL."""
    from django.db import connections
    from django.utils.connection import ConnectionDoesNotExist

    try:
        connection = connections[alias]
    except ConnectionDoesNotExist:
        raise CommandError(f"settings.DATABASES has no database {alias!r} (settings.BADGED_DATABASE)") from None
    if connection.vendor != "postgresql":
        raise CommandError(f"database {alias!r} is {connection.vendor}; badged needs PostgreSQL")
    return connection


def database_dsn(alias: str) -> str:
    """A libpq connection string for Django's database *alias* (same host, user, password, options)."""
    connection = _postgresql(alias)
    try:
        params: dict[str, Any] = connection.get_connection_params()
    except ImproperlyConfigured as exc:
        raise CommandError(f"database {alias!r}: {exc}") from None
    # Django adds driver-level entries (cursor_factory, context, prepare_threshold, ...): keep libpq's own.
    keywords = _libpq_keywords()
    kept = {
        key: value for key, value in params.items()
        if key in keywords and isinstance(value, str | int) and not isinstance(value, bool) and value != ""
    }
    return conninfo.make_conninfo("", **kept)


@contextmanager
def django_connection(alias: str, settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """The psycopg connection of Django's database *alias*, in the transaction Django has open, if any.

    Django (4.2+) talks to PostgreSQL through psycopg 3 when it is installed, as it is with badged: badged
    then works on Django's own connection, so inside ``atomic()`` or a ``TestCase`` it sees the test's rows
    and waits on no lock the test holds (its transaction becomes a savepoint). Under psycopg2 badged opens
    a connection of its own to the same database.
    """
    from badged.db import connect, connect_failed

    connection = _postgresql(alias)
    try:
        connection.ensure_connection()
    except DjangoDatabaseError as exc:
        if isinstance(exc.__cause__, psycopg.Error):
            raise connect_failed(exc.__cause__, database_dsn(alias)) from None
        raise
    raw = connection.connection
    if not isinstance(raw, psycopg.Connection):
        with connect(database_dsn(alias), settings) as own:
            yield own
        return
    if connection.in_atomic_block and raw.info.transaction_status == pq.TransactionStatus.IDLE:
        raw.execute("SELECT 1")  # begin the caller's transaction: badged's becomes its savepoint, never its own
    with _timeouts_kept(raw):
        yield raw


@contextmanager
def _timeouts_kept(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """badged's ``SET LOCAL`` timeouts outlive its savepoint: give the caller's transaction its own back."""
    names = ("lock_timeout", "statement_timeout")
    row = conn.execute("SELECT pg_catalog.current_setting(%s), pg_catalog.current_setting(%s)", names).fetchone()
    try:
        yield
    finally:
        if row is not None and conn.info.transaction_status == pq.TransactionStatus.INTRANS:
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true), pg_catalog.set_config(%s, %s, true)",
                         (names[0], row[0], names[1], row[1]))


@contextmanager
def command_errors(dsn: str = "") -> Iterator[None]:
    """badged's errors as ``CommandError`` with badged's own message lines, passwords scrubbed."""
    try:
        yield
    except SpecError as exc:
        raise CommandError("\n".join(scrub(line, dsn) for line in exc.lines())) from None
    except BadgedError as exc:
        raise CommandError(scrub(str(exc), dsn)) from None
    except psycopg.Error as exc:
        message = message_of(exc)
        raise CommandError(scrub(f"database error: {message}", dsn)) from None
    except DjangoDatabaseError as exc:  # Django's wrapper of the driver's error, from its own connection
        cause = exc.__cause__
        message = message_of(cause) if isinstance(cause, psycopg.Error) else str(exc)
        raise CommandError(scrub(f"database error: {message}", dsn)) from None


def configure_logs(verbosity: int) -> None:
    """Render badged's log records on stderr, unless the project's LOGGING gave the root logger handlers."""
    if logging.getLogger().handlers:
        return
    level = {0: "error", 1: "warning", 2: "info"}.get(verbosity, "debug")
    configure_logging(level, "auto")
