"""``badged backfill``: award badges to users who already qualify.

A trigger only sees future writes. Backfill evaluates each badge's condition over
the rows its table holds *now*, treating each row as the changed row (``NEW``; for
update badges ``OLD`` is the same row), and awards exactly as a trigger would:
under the users' keys (``locks``: a trigger never waits on backfill's uncommitted
awards; backfill may wait a moment for a trigger's transaction), ``ON CONFLICT DO
NOTHING``, one NOTIFY per new award, users who already hold the badge skipped first.

Batches of row ids (ctids, read by a separate read-only transaction) are evaluated
set-wise, one transaction per batch, so an interrupted backfill keeps what it
awarded and a re-run skips it. A batch whose condition fails on some row is
re-evaluated row by row, each row in a savepoint, and the failing rows are counted
and skipped, as the trigger's guard would.

Exact for insert badges whose condition depends on the current state (counts,
thresholds); approximate for update badges whose condition compares OLD with NEW
(here OLD = NEW); impossible for delete badges (the deleted rows are gone), which
are skipped with a message.

``backfill_badges`` is what ``badged backfill`` calls: it picks the badges, resolves
their tables, checks badged's award table exists, then runs ``run_backfill`` badge by
badge, yielding what each did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from badged.awarding import award_users_statement
from badged.catalog import own_table_exists, resolve_tables
from badged.condition import Event
from badged.db import connect, set_local_search_path
from badged.errors import ConfigError, DatabaseMismatch, LockTimeout
from badged.function_context import function_search_path
from badged.locks import lock_users_statement
from badged.logs import get_logger
from badged.objects import Table
from badged.own_schema import AWARD_TABLE
from badged.reconcile import qualify_in_database, resolve_and_check
from badged.settings import Settings
from badged.spec import Badge

log = get_logger("badged.backfill")


@dataclass
class Progress:
    badge: str
    total_rows: int
    rows: int = 0
    awarded: int = 0
    failed_rows: int = 0
    started: float = 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class BadgeBackfill:
    """What backfill did for one badge: its progress, or why it skipped the badge."""

    badge: str
    progress: Progress | None = None
    skipped: str = ""


class BackfillInterrupted(KeyboardInterrupt):
    """Ctrl-C during the backfill of *badge*: the awards already made stay."""

    def __init__(self, badge: str) -> None:
        super().__init__(badge)
        self.badge = badge


def backfill_badges(dsn: str, badges: Sequence[Badge], settings: Settings, *, only: Collection[str] = (),
                    source: str = "badge.json", batch_size: int = 1000, dry_run: bool = False,
                    on_progress: ProgressCallback | None = None) -> Iterator[BadgeBackfill]:
    """Backfill *badges* (those whose code is in *only*, when given), one after the other.

    Checks first, before anything is awarded (ConfigError, DatabaseMismatch): every code of *only*
    names a badge of *source* (badge.json), every badge matches the database, and badged's award table
    exists. Then returns an iterator that backfills a badge per step and yields what it did; a delete
    badge is skipped. Ctrl-C during a badge raises BackfillInterrupted naming it.
    """
    wanted = set(only)
    unknown = wanted - {badge.code for badge in badges}
    if unknown:
        raise ConfigError(f"--badge {', '.join(sorted(unknown))}: no such badge in {source}")
    selected = tuple(badge for badge in badges if not wanted or badge.code in wanted)
    with connect(dsn, settings) as conn:
        selected, tables = resolve_and_check(conn, selected, resolve_tables(conn, (b.table for b in selected)),
                                             settings)
        if not own_table_exists(conn, settings, AWARD_TABLE):
            raise ConfigError("badged's award table does not exist yet: run `badged reconcile --once` first")
    return _each_badge(dsn, selected, tables, settings, batch_size=batch_size, dry_run=dry_run,
                       on_progress=on_progress)


def _each_badge(dsn: str, badges: Sequence[Badge], tables: dict[str, Table], settings: Settings, *,
                batch_size: int, dry_run: bool, on_progress: ProgressCallback | None) -> Iterator[BadgeBackfill]:
    for badge in badges:
        if badge.event is Event.DELETE:
            yield BadgeBackfill(badge.code, skipped="a delete badge cannot be backfilled (the deleted rows are gone)")
            continue
        try:
            progress = run_backfill(lambda: connect(dsn, settings), badge, tables[str(badge.table)], settings,
                                    batch_size=batch_size, dry_run=dry_run, on_progress=on_progress)
        except KeyboardInterrupt:
            raise BackfillInterrupted(badge.code) from None
        yield BadgeBackfill(badge.code, progress)


def candidates_sql(badge: Badge, table: Table, settings: Settings, *,
                   rows: str = "ctid = ANY(%(ctids)s::tid[])") -> sql.Composed:
    """The users of the given rows who do not hold *badge* and whose rows meet its condition now."""
    award = sql.Identifier(settings.schema, AWARD_TABLE)
    old = sql.SQL(', LATERAL (SELECT "new".*) AS "old"') if badge.event is Event.UPDATE else sql.SQL("")
    return sql.SQL("""
        SELECT DISTINCT ("new".{user_field})::text
        FROM {table} AS "new"{old}
        WHERE {rows}
          AND "new".{user_field} IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM {award} a
                          WHERE a.badge = {code} AND a.user_id = ("new".{user_field})::text)
          AND ({condition})
    """).format(
        user_field=sql.Identifier(badge.user_field), table=table.qualified, old=old, rows=sql.SQL(rows),
        award=award, code=sql.Literal(badge.code), condition=sql.SQL(badge.condition.expression),
    )


def run_backfill(dsn_connect: Callable[[], psycopg.Connection[Any]], badge: Badge, table: Table,
                 settings: Settings, *, batch_size: int = 1000, dry_run: bool = False,
                 on_progress: ProgressCallback | None = None) -> Progress:
    """Backfill one badge; returns what it did (with *dry_run*, what it would award)."""
    search_path = function_search_path(table)
    with dsn_connect() as reader, dsn_connect() as writer:
        badge = _qualified(reader, badge, table, settings)
        statement = candidates_sql(badge, table, settings)
        one_row = candidates_sql(badge, table, settings, rows="ctid = %(ctid)s::tid")
        reader.autocommit = False
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        count = reader.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(table.qualified)).fetchone()
        progress = Progress(badge.code, int(count[0]) if count else 0, started=time.monotonic())
        writer.autocommit = False
        with reader.cursor(name="badged_backfill_rows") as rows:
            rows.itersize = batch_size
            rows.execute(sql.SQL("SELECT ctid::text FROM {}").format(table.qualified))
            while batch := [row[0] for row in rows.fetchmany(batch_size)]:
                users, failed = _qualifying_users(writer, statement, one_row, batch, search_path)
                awarded = len(users) if dry_run else _award(writer, badge, users, settings)
                writer.commit()
                progress.rows += len(batch)
                progress.awarded += awarded
                progress.failed_rows += failed
                if on_progress:
                    on_progress(progress)
        reader.rollback()
    log.info("backfill.done", badge=badge.code, rows=progress.rows, awarded=progress.awarded,
             failed_rows=progress.failed_rows, dry_run=dry_run)
    return progress


def _qualified(conn: psycopg.Connection[Any], badge: Badge, table: Table, settings: Settings) -> Badge:
    """*badge* with the names of its condition qualified as its trigger's are (see ``names``)."""
    tables = {str(badge.table): table}
    (badge,), problems = qualify_in_database(conn, (badge,), tables, settings)
    if problems:
        raise DatabaseMismatch("database", problems)
    return badge


def _qualifying_users(writer: psycopg.Connection[Any], statement: sql.Composed, one_row: sql.Composed,
                      ctids: list[str], search_path: tuple[str, ...]) -> tuple[list[str], int]:
    """The users a batch of rows earns the badge for; on a failing condition, row by row. (users, failed rows)"""
    set_local_search_path(writer, search_path)
    try:
        with writer.transaction():
            return [row[0] for row in writer.execute(statement, {"ctids": ctids})], 0
    except psycopg.OperationalError:
        raise
    except psycopg.DatabaseError:
        pass  # the condition fails on some row of the batch: find it, row by row
    users: set[str] = set()
    failed = 0
    for ctid in ctids:
        try:
            with writer.transaction():
                users.update(row[0] for row in writer.execute(one_row, {"ctid": ctid}))
        except psycopg.OperationalError:
            raise
        except psycopg.DatabaseError:
            failed += 1
    return sorted(users), failed


def _award(writer: psycopg.Connection[Any], badge: Badge, users: list[str], settings: Settings) -> int:
    """Award *badge* to *users* under their keys (see ``locks``): applications never wait on these inserts."""
    if not users:
        return 0
    try:
        writer.execute(lock_users_statement(settings), {"users": users})
    except psycopg.errors.LockNotAvailable:
        raise LockTimeout(
            f"backfill of {badge.code}: a transaction checking one of these users held its key longer than "
            "lock_timeout; run backfill again later (what it awarded stays, holders are skipped)") from None
    row = writer.execute(award_users_statement(settings), {"badge": badge.code, "users": users}).fetchone()
    return int(row[0]) if row else 0
