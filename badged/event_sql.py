"""What a subscription says to the database and how it reads the answers. Pure.

The plain and the async iterator of ``listen`` speak the same protocol and differ only in
how they wait: each step here is a statement with its parameters (``psycopg.sql``, values
never pasted) or the reading of a result, so both run exactly the same SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from badged.errors import PermanentError
from badged.events import AwardEvent, Position
from badged.own_schema import AWARD_TABLE, BADGE_TABLE, GROUP_TABLE, tables_exist
from badged.settings import Settings

Statement = tuple[sql.SQL | sql.Composed, Sequence[Any] | Mapping[str, Any]]

CURRENT_SNAPSHOT = sql.SQL("SELECT pg_catalog.pg_current_snapshot()::text")
NOTIFY = sql.SQL("SELECT pg_catalog.pg_notify(%s, '')")
#: The prefix of the private channel the LISTEN probe rings (never the public one: listeners there parse JSON).
PROBE_CHANNEL_PREFIX = "badged_probe_"

LISTEN_UNHEARD = (
    "LISTEN on this connection never heard our own NOTIFY; a transaction-mode PgBouncer (or another "
    "transaction pooler) cannot carry LISTEN/NOTIFY: point --dsn at PostgreSQL or a session-mode pool"
)


def listen(channel: str) -> sql.Composed:
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


def unlisten(channel: str) -> sql.Composed:
    return sql.SQL("UNLISTEN {}").format(sql.Identifier(channel))


def probe_channel() -> str:
    """A channel of this session's own, for proving that LISTEN works on this connection."""
    return PROBE_CHANNEL_PREFIX + uuid.uuid4().hex


class EventStatements:
    """The statements of one subscription, for badged's tables in *settings.schema*."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        award = sql.Identifier(settings.schema, AWARD_TABLE)
        badge = sql.Identifier(settings.schema, BADGE_TABLE)
        group = sql.Identifier(settings.schema, GROUP_TABLE)
        # The delta between two snapshots, read in (txid, id) order along the (txid, id)
        # index, resuming after the last pair delivered: each batch is one index range scan.
        self._fetch = sql.SQL("""
            SELECT a.txid::text::int8, a.id, a.badge, b.name, a.user_id, a.awarded_at, b.trigger_table
            FROM {award} a LEFT JOIN {badge} b ON b.code = a.badge
            WHERE (a.txid, a.id) > (GREATEST(pg_catalog.pg_snapshot_xmin(%(from)s::pg_snapshot),
                                             %(after_txid)s::text::xid8), %(after_id)s)
              AND NOT pg_catalog.pg_visible_in_snapshot(a.txid, %(from)s::pg_snapshot)
              AND pg_catalog.pg_visible_in_snapshot(a.txid, %(upto)s::pg_snapshot)
              AND a.id > %(min_id)s
            ORDER BY a.txid, a.id
            LIMIT %(limit)s
        """).format(award=award, badge=badge)
        self._lock_group = sql.SQL(
            "SELECT snapshot::text, upto::text, after_txid::text::int8, after_id, min_id FROM {}"
            " WHERE name = %s FOR UPDATE SKIP LOCKED"
        ).format(group)
        self._save_group = sql.SQL(
            "UPDATE {} SET snapshot = %s::pg_snapshot, upto = %s::pg_snapshot, after_txid = %s::text::xid8,"
            " after_id = %s, min_id = %s, delivered = delivered + %s, updated_at = now() WHERE name = %s"
        ).format(group)
        self._create_group = sql.SQL(
            "INSERT INTO {} (name, snapshot, min_id) VALUES (%s, %s::pg_snapshot, %s)"
            " ON CONFLICT (name) DO NOTHING"
        ).format(group)

    # -- the session's start -------------------------------------------------------------

    def tables_exist(self) -> Statement:
        return tables_exist(self.settings, AWARD_TABLE, GROUP_TABLE)

    def require_tables(self, row: tuple[Any, ...] | None, group: str | None) -> None:
        """Raise a PermanentError naming the fix when *row* (``tables_exist``'s) says they are missing."""
        if not row or not row[0] or (group is not None and not row[1]):
            raise PermanentError(
                f"badged's tables are missing from schema {self.settings.schema!r}: run `badged reconcile --once` "
                "(or `badged run`) against this database first"
            )

    @staticmethod
    def start_position(since: int | None, snapshot: str | None) -> Position:
        """Where a new position starts: after award *since*, else "now" (*snapshot*, the current one)."""
        if since is not None:
            return Position.since(since)
        if snapshot is None:
            raise ValueError("a position from now needs the current snapshot")
        return Position(snapshot)

    def create_group(self, group: str, start: Position) -> Statement:
        return self._create_group, (group, start.snapshot, start.min_id)

    # -- reading -------------------------------------------------------------------------

    def fetch(self, position: Position, upto: str, limit: int) -> Statement:
        return self._fetch, {
            "from": position.snapshot, "upto": upto, "after_txid": position.after_txid,
            "after_id": position.after_id, "min_id": position.min_id, "limit": limit,
        }

    @staticmethod
    def read_batch(rows: Sequence[tuple[Any, ...]]) -> list[tuple[int, AwardEvent]]:
        return [(int(row[0]), AwardEvent(*row[1:])) for row in rows]

    # -- a group's position --------------------------------------------------------------

    def lock_group(self, group: str) -> Statement:
        return self._lock_group, (group,)

    def save_group(self, group: str, after: Position, delivered: int) -> Statement:
        return self._save_group, (after.snapshot, after.upto, after.after_txid, after.after_id, after.min_id,
                                  delivered, group)
