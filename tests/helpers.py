"""Small helpers shared by the database tests."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from badged.db import connect
from badged.logs import EVENT_ATTR, FIELDS_ATTR
from badged.names import KnownNames, NameKind
from badged.objects import Table
from badged.plan import Outcome
from badged.qualify import qualify_badges
from badged.reconcile import reconcile
from badged.routines import RoutineKind, Routines
from badged.settings import Settings
from badged.spec import Badge, parse_badges

#: The trigger (and function) checking each seed badge: one per table and kind of write.
SEED_OBJECTS = {
    "pionner": "badged_public$auth_user$update",
    "collector": "badged_public$dummy_sketch$insert",
    "star": "badged_public$dummy_sketch$update_of",
}


#: What pg_proc says of the functions the pure tests' conditions call (the database's answer, see routines).
ROUTINES = Routines(frozenset(
    [("pg_catalog", name, RoutineKind.AGGREGATE) for name in
     ("count", "sum", "min", "max", "avg", "percentile_disc", "mode", "bool_or", "every", "string_agg")]
    + [("pg_catalog", name, RoutineKind.FUNCTION) for name in ("age", "length", "now", "lower", "abs")]
    + [("pg_catalog", "row_number", RoutineKind.WINDOW)]
))


#: What the catalog says of the names the pure tests' conditions use (see names): pg_catalog's
#: functions and types, and the seed's tables in public.
KNOWN_NAMES = KnownNames(frozenset(
    [(NameKind.FUNCTION, schema, name) for schema, name, _kind in ROUTINES.found]
    + [(NameKind.TYPE, "pg_catalog", name) for name in ("text", "int4", "int8", "numeric", "interval", "date",
                                                         "timestamptz", "bool")]
    + [(NameKind.RELATION, "public", name) for name in ("dummy_sketch", "auth_user")]
), frozenset({("pg_catalog", "random"), ("pg_catalog", "pg_sleep")}))


def qualified(badges: tuple[Badge, ...], tables: dict[str, Table]) -> tuple[Badge, ...]:
    """*badges* as reconcile renders them: every name in their conditions written with its schema."""
    result, problems = qualify_badges(badges, dict(tables), KNOWN_NAMES, frozenset())
    assert not problems, problems
    return result


def badges_from(items: list[dict[str, Any]], settings: Settings | None = None) -> tuple[Badge, ...]:
    settings = settings or Settings()
    return parse_badges(json.dumps(items), source="badge.json", prefix=settings.prefix, allow_empty=True)


def apply(dsn: str, items: list[dict[str, Any]], settings: Settings | None = None) -> Outcome:
    settings = settings or Settings()
    with connect(dsn, settings) as conn:
        return reconcile(conn, badges_from(items, settings), settings, apply=True)


def plan(dsn: str, items: list[dict[str, Any]], settings: Settings | None = None) -> Outcome:
    settings = settings or Settings()
    with connect(dsn, settings) as conn:
        return reconcile(conn, badges_from(items, settings), settings, apply=False)


def awards(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    """(badge, user_id) pairs in badged.award."""
    return {(badge, user) for badge, user in conn.execute("SELECT badge, user_id FROM badged.award").fetchall()}


def badge(code: str, condition: str, event: str = "insert", table: str = "dummy_sketch",
          user_field: str = "user_id", name: str | None = None) -> dict[str, str]:
    return {"name": name or code.title(), "code": code, "condition": condition, "trigger_condition": event,
            "trigger_table": table, "user_field": user_field}


def object_oids(conn: psycopg.Connection[Any], prefix: str = "badged_") -> dict[str, int]:
    rows = conn.execute(
        "SELECT 'function ' || proname, oid::int8 FROM pg_proc WHERE starts_with(proname::text, %(p)s) "
        "UNION ALL SELECT 'trigger ' || tgname, oid::int8 FROM pg_trigger WHERE starts_with(tgname::text, %(p)s)",
        {"p": prefix},
    ).fetchall()
    return dict(rows)


def triggers(dsn: str) -> set[str]:
    """badged's triggers in the database (partition clones left out)."""
    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'badged\\_%' AND tgparentid = 0").fetchall()}


class LogRecorder(logging.Handler):
    """Keeps badged's log records as ``{"event": ..., "level": ..., **fields}``; threads may wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        entry = {"event": getattr(record, EVENT_ATTR, record.getMessage()), "level": record.levelname.lower(),
                 "logger": record.name, **getattr(record, FIELDS_ATTR, {})}
        with self._changed:
            self.events.append(entry)
            self._changed.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e.get("event") == name]

    def wait(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._changed:
            if not self._changed.wait_for(lambda: len([e for e in self.events if e.get("event") == name]) >= count,
                                          timeout):
                raise AssertionError(f"fewer than {count} {name!r} events within {timeout} s: {self.events[-5:]}")
        return self.named(name)


@contextlib.contextmanager
def capture_logs(logger: str = "badged") -> Iterator[LogRecorder]:
    """Every record of *logger* (badged's by default) while the block runs, at any level."""
    recorder = LogRecorder()
    target = logging.getLogger(logger)
    saved = target.level
    target.addHandler(recorder)
    target.setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        target.removeHandler(recorder)
        target.setLevel(saved)


def welcome_on_signup(dsn: str) -> str:
    """A ``signup`` table whose every row earns ``welcome`` (reconciled); *dsn* again."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    apply(dsn, [badge("welcome", "true", table="signup")])
    return dsn
