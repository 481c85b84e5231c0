"""Finish the checks that triggers deferred: ``badged run`` (every second) and ``badged recheck``.

A trigger defers a check when it cannot decide it alone without waiting (see
``locks``): another transaction was checking the same user at that moment, or its
REPEATABLE READ snapshot was older than commits that may matter. It then writes the
badges, the user and the changed row (as the table's row literal) to
``<schema>.recheck``. Draining an entry means doing what the trigger would have done
had it run after those transactions ended:

1. take the same keys the trigger takes, with try-locks: a key still held means a
   transaction checking that user has not ended yet, so the entry is left for the
   next pass (it is *busy*), and nobody ever waits on an application;
2. skip the badges the user now holds, evaluate the others' conditions with ``NEW``
   and ``OLD`` rebuilt from the recorded rows, against the data as it is now;
3. award the earned ones (one NOTIFY each, like a trigger) and delete the entry, in
   one transaction.

Entries of badges no longer in badge.json (or that moved to another table or kind of
write) are dropped. A condition that fails is skipped with a warning, as in the
trigger. Several drainers (replicas) share the work with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from badged.awarding import award_statement, held_statement
from badged.backoff import Backoff
from badged.catalog import read_routines, resolve_tables
from badged.db import set_local_search_path
from badged.db_errors import message_of
from badged.errors import BadgedError, ConnectionFailed
from badged.function_context import function_search_path
from badged.function_keys import needs_function_lock
from badged.locks import try_function_lock, try_user_lock
from badged.logs import get_logger
from badged.objects import Table
from badged.own_schema import RECHECK_TABLE
from badged.reconcile import qualify_in_database
from badged.render import object_name, trigger_kind
from badged.routines import Routines
from badged.settings import Settings
from badged.spec import Badge

log = get_logger("badged.recheck")

#: Entries per transaction: keys are held until commit, so keep it short.
BATCH_SIZE = 20


class Result(StrEnum):
    """What became of one recheck entry."""

    AWARDED = "awarded"  # at least one badge earned
    NOT_EARNED = "not_earned"  # checked: nothing earned (or everything already held)
    BUSY = "busy"  # a key is still held by a transaction checking that user: left for the next pass
    DROPPED = "dropped"  # its badges are no longer in badge.json on that table and kind of write
    FAILED = "failed"  # its row no longer fits the table, or every condition failed: dropped with a warning


@dataclass
class Drained:
    """What one drain did, by result, and how many entries it found left for later."""

    counts: dict[Result, int] = field(default_factory=lambda: dict.fromkeys(Result, 0))
    awards: int = 0
    left: int = 0
    #: age in seconds of the oldest entry left, if any
    oldest: float | None = None

    @property
    def done(self) -> int:
        return sum(count for result, count in self.counts.items() if result is not Result.BUSY)

    def add(self, other: Drained) -> None:
        for result, count in other.counts.items():
            self.counts[result] += count
        self.awards += other.awards
        self.left, self.oldest = other.left, other.oldest


@dataclass(frozen=True)
class _Entry:
    id: int
    trigger_table: str
    event: str
    user_id: str
    badges: tuple[str, ...]
    new_row: str | None
    old_row: str | None


class _Busy(Exception):
    """A key is held by another transaction: leave the entry for the next pass."""


def drain(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings, *,
          batch_size: int = BATCH_SIZE, stop: Callable[[], bool] = lambda: False) -> Drained:
    """Finish every entry that can be finished now (each at most once per call); *conn* must be in autocommit."""
    total = Drained()
    after = 0
    context: _Badges | None = None
    while not stop():
        with conn.transaction():
            entries = _fetch(conn, settings, after, batch_size)
            if not entries:
                break
            if context is None:  # only when there is work: resolving tables and routines costs queries
                context = _Badges.read(conn, badges, settings)
            for entry in entries:
                total.counts[_finish(conn, entry, context, settings, total)] += 1
            after = entries[-1].id
    total.left, total.oldest = pending(conn, settings)
    return total


def pending(conn: psycopg.Connection[Any], settings: Settings) -> tuple[int, float | None]:
    """How many entries wait (counted up to 10,000) and the age in seconds of the oldest, if any."""
    row = conn.execute(sql.SQL(
        "SELECT (SELECT pg_catalog.count(*) FROM (SELECT FROM {t} LIMIT 10000) s),"
        " (SELECT pg_catalog.date_part('epoch', pg_catalog.now() - created_at) FROM {t} ORDER BY id LIMIT 1)"
    ).format(t=_table(settings))).fetchone()
    return (int(row[0]), float(row[1]) if row[1] is not None else None) if row else (0, None)


def _table(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.schema, RECHECK_TABLE)


def _fetch(conn: psycopg.Connection[Any], settings: Settings, after: int, limit: int) -> list[_Entry]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL(
            "SELECT id, trigger_table, event, user_id, badges, new_row, old_row FROM {} WHERE id > %s"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED").format(_table(settings)), (after, limit))
        return [_Entry(r["id"], r["trigger_table"], r["event"], r["user_id"], tuple(r["badges"]), r["new_row"],
                       r["old_row"]) for r in cur.fetchall()]


@dataclass(frozen=True)
class _Badges:
    """The badges of badge.json with their resolved tables, and what the database says their functions are."""

    by_code: dict[str, tuple[Badge, Table]]
    routines: Routines

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings) -> _Badges:
        tables = resolve_tables(conn, (badge.table for badge in badges))
        # evaluated as the trigger does: every name qualified (a badge whose names do not resolve
        # was refused by reconcile; its checks fail here and are dropped with a warning, as the trigger's)
        badges, _problems = qualify_in_database(conn, badges, tables, settings)
        by_code = {badge.code: (badge, table) for badge in badges
                   if (table := tables.get(str(badge.table))) is not None}
        routines = read_routines(conn, {name for badge in badges for _, name in badge.condition.calls})
        return cls(by_code, routines)


def _finish(conn: psycopg.Connection[Any], entry: _Entry, context: _Badges, settings: Settings,
            total: Drained) -> Result:
    wanted = [(badge, table) for code in entry.badges if (found := context.by_code.get(code)) is not None
              for badge, table in (found,)
              if table.display == entry.trigger_table and badge.event.value == entry.event]
    if not wanted:
        _delete(conn, entry, settings)
        return Result.DROPPED
    try:
        with conn.transaction():  # a savepoint: a busy or failing entry leaves the others' work alone
            _claim(conn, entry, wanted, context.routines, settings)
            earned, failed = _evaluate(conn, entry, wanted, settings)
            if earned:
                row = conn.execute(award_statement(settings), {"badges": earned, "user": entry.user_id}).fetchone()
                total.awards += int(row[0]) if row else 0
            _delete(conn, entry, settings)
    except _Busy:
        return Result.BUSY
    if failed == len(wanted):
        return Result.FAILED
    return Result.AWARDED if earned else Result.NOT_EARNED


def _claim(conn: psycopg.Connection[Any], entry: _Entry, wanted: list[tuple[Badge, Table]], routines: Routines,
           settings: Settings) -> None:
    """Take the keys the trigger took for these badges, or raise _Busy (never wait)."""
    locks: list[sql.Composable] = [try_user_lock(sql.Literal(entry.user_id), settings)]
    for badge, table in wanted:
        if needs_function_lock(badge, table, routines, function_search_path(table)):
            name = object_name(settings, table, trigger_kind(badge))
            locks.append(try_function_lock(name, settings))
    for lock in dict.fromkeys(sql.SQL("SELECT {}").format(lock).as_string(conn) for lock in locks):
        row = conn.execute(lock).fetchone()  # composed above with psycopg.sql; no parameters
        if not row or not row[0]:
            raise _Busy


def _evaluate(conn: psycopg.Connection[Any], entry: _Entry, wanted: list[tuple[Badge, Table]],
              settings: Settings) -> tuple[list[str], int]:
    """The codes the user does not hold whose conditions hold now for the recorded row, and how many failed."""
    held = {row[0] for row in conn.execute(held_statement(settings),
                                           {"user": entry.user_id, "badges": [b.code for b, _ in wanted]})}
    todo = [(badge, table) for badge, table in wanted if badge.code not in held]
    if not todo:
        return [], 0
    table = todo[0][1]
    set_local_search_path(conn, function_search_path(table))
    params = {"new": entry.new_row, "old": entry.old_row}
    try:
        with conn.transaction():
            row = conn.execute(_conditions_query(todo, table), params).fetchone()
        results = list(row[0]) if row else []
        return [badge.code for (badge, _), ok in zip(todo, results, strict=True) if ok], 0
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        pass  # some condition fails on this row: each on its own, as the trigger's guard does
    earned, failed = [], 0
    for badge, _ in todo:
        try:
            with conn.transaction():
                row = conn.execute(_conditions_query([(badge, table)], table), params).fetchone()
            if row and row[0][0]:
                earned.append(badge.code)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            failed += 1
            log.warning("recheck.condition_failed", badge=badge.code, table=entry.trigger_table,
                        error=message_of(exc))
    return earned, failed


def _conditions_query(badges: list[tuple[Badge, Table]], table: Table) -> sql.Composed:
    """``SELECT ARRAY[condition, …]`` with NEW and OLD rebuilt from the recorded row literals."""
    def row(parameter: str) -> sql.Composed:
        return sql.SQL("(SELECT ({}::text::{}).*)").format(sql.Placeholder(parameter), table.qualified)

    return sql.SQL('SELECT ARRAY[{}]::boolean[] FROM {} AS "new", {} AS "old"').format(
        sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(badge.condition.expression)) for badge, _ in badges),
        row("new"), row("old"))


def _delete(conn: psycopg.Connection[Any], entry: _Entry, settings: Settings) -> None:
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(_table(settings)), (entry.id,))


class RecheckWorker:
    """A thread of ``badged run`` that drains the recheck table every *interval* seconds."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], settings: Settings, interval: float,
                 on_drained: Callable[[Drained], None] | None = None) -> None:
        self._connect = connect
        self._settings = settings
        self._interval = interval
        self._on_drained = on_drained
        self._badges: tuple[Badge, ...] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="badged-recheck", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def use(self, badges: tuple[Badge, ...]) -> None:
        """The badges to recheck with: those of the last badge.json reconciled."""
        with self._lock:
            self._badges = badges

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = Backoff()
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            with self._lock:
                badges = self._badges
            delay = self._interval
            if badges is not None:
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = self._connect()
                    started = time.monotonic()
                    drained = drain(conn, badges, self._settings, stop=self._stop.is_set)
                    backoff.reset()
                    if drained.done or drained.counts[Result.BUSY]:
                        log.info("recheck.drained", seconds=round(time.monotonic() - started, 3),
                                 awards=drained.awards, left=drained.left,
                                 **{r.value: n for r, n in drained.counts.items() if n}, exc_info=None)
                    if self._on_drained:
                        self._on_drained(drained)
                except (BadgedError, psycopg.Error) as exc:
                    delay = backoff.next_delay()
                    error = message_of(exc) if isinstance(exc, psycopg.Error) else str(exc)
                    log.warning("recheck.failed", error=error, retry_in=round(delay, 2))
                    if isinstance(exc, ConnectionFailed | psycopg.OperationalError) and conn is not None:
                        conn.close()
                        conn = None
            self._stop.wait(delay)
        if conn is not None:
            conn.close()

