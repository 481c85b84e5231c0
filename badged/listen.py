"""Subscribe to badge-earned events: ``badged listen`` and ``badged.subscribe()``.

Nothing is lost while no one listens, because the award table is the source of
truth and NOTIFY only rings the doorbell:

1. LISTEN on a connection of its own (psycopg's ``notifies()`` needs one);
2. catch up from the award table, in batches, from a ``Position`` (see ``events``);
3. wait for a notification (or a short poll), then read again from the position.

Without a group the position lives in memory and starts "now" (or ``since``).
With ``group=NAME`` it lives in ``<schema>.consumer_group``: a batch is read, handed
over and the position advanced in one transaction holding the group's row
``FOR UPDATE SKIP LOCKED``, so several processes of one group share the work
without duplicates, and a crash before commit hands the batch out again
(at-least-once; exact across clean stops).

Temporary database errors (by SQLSTATE, see ``db_errors``: a lost connection, a
restart, a timeout) are retried with backoff on new connections; permanent ones (a
missing right) end the iteration with a clear error, as does a DSN whose LISTEN never
hears its own NOTIFY (a transaction-mode PgBouncer).

``close()`` lets the batch in hand finish and its position be saved; a query still
unanswered ``CLOSE_GRACE_S`` later (a stalled proxy answers nothing and closes
nothing) has its connection cut (``db.sever``): the batch is rolled back and handed
out again later, and the iteration ends all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import psycopg
import structlog
from psycopg import pq, sql

from badged.awarding import AWARD_TABLE
from badged.backoff import Backoff
from badged.db import connect, sever
from badged.db_errors import translate
from badged.errors import BadgedError, ConfigError, PermanentError, TemporaryError
from badged.events import AwardEvent, Position
from badged.render import BADGE_TABLE, GROUP_TABLE
from badged.settings import Settings

log = structlog.get_logger("badged.listen")

#: How long to wait for our own NOTIFY before deciding LISTEN cannot work here.
LISTEN_PROBE_TIMEOUT_S = 3.0
#: After close(), how long the batch in hand may take before the connections are cut.
CLOSE_GRACE_S = 2.0


class Subscription:
    """Award events as a plain iterator and an async iterator, reconnecting by itself."""

    def __init__(self, dsn: str, *, group: str | None = None, since: int | None = None,
                 settings: Settings | None = None, batch_size: int = 1000, poll_interval: float = 1.0) -> None:
        if group is not None and not group.strip():
            raise ConfigError("the group name must not be empty")
        if batch_size < 1:
            raise ConfigError("batch size must be at least 1")
        self.dsn = dsn
        self.group = group
        self.since = since
        self.settings = settings or Settings()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._closed = threading.Event()
        self._position: Position | None = None
        self._sql = _Statements(self.settings)
        #: the connections of the session in progress, for close() to cut if the network stalls
        self._live: set[psycopg.Connection[Any]] = set()
        self._live_lock = threading.Lock()

    def close(self) -> None:
        """Stop after the batch in hand (its position is saved first); a query the network still holds up
        CLOSE_GRACE_S later is cut.

        Safe from a signal handler and from another thread: it only sets a flag and starts a timer.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        timer = threading.Timer(CLOSE_GRACE_S, self._sever)
        timer.daemon = True
        timer.start()

    def _sever(self) -> None:
        """From the grace's end until the session ends: cut a connection that waits on the database.

        Only one with a query in flight (ACTIVE): a consumer still busy with the events in hand is left
        to finish them, and to save the position.
        """
        while True:
            with self._live_lock:
                live = list(self._live)
            if not live:
                return
            for conn in live:
                if conn.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                    log.warning("listen.severed", reason=f"a query was still waiting on the database "
                                                         f"{CLOSE_GRACE_S:g} s after close(): the connection was cut")
                    sever(conn)
            time.sleep(0.25)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- the plain iterator ------------------------------------------------------------

    def __iter__(self) -> Generator[AwardEvent, None, None]:
        backoff = Backoff()
        while not self.closed:
            try:
                yield from self._session(backoff)
            except (psycopg.Error, BadgedError) as exc:
                error = translate(exc, "read awards") if isinstance(exc, psycopg.Error) else exc
                if self.closed:
                    return  # cut by close(): nothing to retry
                if not isinstance(error, TemporaryError):
                    raise error from None
                delay = backoff.next_delay()
                log.warning("listen.reconnect", error=str(error), cause=error.cause, retry_in=round(delay, 2))
                self._closed.wait(delay)

    def _session(self, backoff: Backoff) -> Iterator[AwardEvent]:
        with self._connect() as work, self._connect() as bell:
            bell.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.settings.channel)))
            self._require_schema(work)
            self._probe_listen(work, bell)
            if self.group is not None:
                self._ensure_group(work)
            elif self._position is None:
                self._position = self._start_position(work)
            backoff.reset()
            log.info("listen.started", group=self.group, channel=self.settings.channel)
            while not self.closed:
                if self.group is None:
                    yield from self._drain_memory(work)
                else:
                    yield from self._drain_group(work)
                self._wait_for_doorbell(bell)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of this session, which close() may cut; closed at the end."""
        conn = connect(self.dsn, self.settings, stop=self._closed)
        with self._live_lock:
            self._live.add(conn)
        try:
            with conn:
                yield conn
        finally:
            with self._live_lock:
                self._live.discard(conn)

    def _wait_for_doorbell(self, bell: psycopg.Connection[Any]) -> None:
        """Return on a notification, after poll_interval, or soon after close()."""
        waited = 0.0
        step = min(0.5, self.poll_interval)
        while not self.closed and waited < self.poll_interval:
            if any(True for _ in bell.notifies(timeout=step, stop_after=1)):
                for _ in bell.notifies(timeout=0):  # swallow the rest of the burst: one read serves all
                    pass
                return
            waited += step

    def _drain_memory(self, work: psycopg.Connection[Any]) -> Iterator[AwardEvent]:
        while True:
            assert self._position is not None
            upto, batch = self._fetch(work, self._position)
            for _txid, event in batch:
                yield event
            self._position = self._position.advance(upto, batch, self.batch_size)
            if len(batch) < self.batch_size or self.closed:
                return

    def _drain_group(self, work: psycopg.Connection[Any]) -> Iterator[AwardEvent]:
        while not self.closed:
            with work.transaction():
                row = work.execute(self._sql.lock_group, (self.group,)).fetchone()
                if row is None:
                    return  # another member of the group holds it; the doorbell or the poll brings us back
                position = Position(*row)
                upto, batch = self._fetch(work, position)
                for _txid, event in batch:
                    yield event
                after = position.advance(upto, batch, self.batch_size)
                work.execute(self._sql.save_group, (after.snapshot, after.upto, after.after_txid, after.after_id,
                                                    after.min_id, len(batch), self.group))
            if len(batch) < self.batch_size:
                return

    def _fetch(self, work: psycopg.Connection[Any],
               position: Position) -> tuple[str, list[tuple[int, AwardEvent]]]:
        """The next batch of the delta from *position*, and the snapshot that delta ends at."""
        upto = position.upto
        if upto is None:
            row = work.execute("SELECT pg_catalog.pg_current_snapshot()::text").fetchone()
            assert row is not None
            upto = str(row[0])
        rows = work.execute(self._sql.fetch, {
            "from": position.snapshot, "upto": upto, "after_txid": position.after_txid,
            "after_id": position.after_id, "min_id": position.min_id, "limit": self.batch_size,
        }).fetchall()
        return upto, [(int(row[0]), AwardEvent(*row[1:])) for row in rows]

    def _start_position(self, work: psycopg.Connection[Any]) -> Position:
        if self.since is not None:
            return Position.since(self.since)
        row = work.execute("SELECT pg_catalog.pg_current_snapshot()::text").fetchone()
        assert row is not None
        return Position(str(row[0]))

    def _ensure_group(self, work: psycopg.Connection[Any]) -> None:
        start = self._start_position(work)
        work.execute(self._sql.create_group, (self.group, start.snapshot, start.min_id))

    def _require_schema(self, work: psycopg.Connection[Any]) -> None:
        row = work.execute("SELECT pg_catalog.to_regclass(%s) IS NOT NULL, pg_catalog.to_regclass(%s) IS NOT NULL",
                           (f"{self.settings.schema}.{AWARD_TABLE}", f"{self.settings.schema}.{GROUP_TABLE}"),
                           ).fetchone()
        if not row or not row[0] or (self.group is not None and not row[1]):
            raise PermanentError(
                f"badged's tables are missing from schema {self.settings.schema!r}: run `badged reconcile --once` "
                "(or `badged run`) against this database first"
            )

    def _probe_listen(self, work: psycopg.Connection[Any], bell: psycopg.Connection[Any]) -> None:
        """Prove the doorbell rings: a transaction-mode pooler silently drops LISTEN."""
        token = f"badged-listen-probe-{uuid.uuid4()}"
        work.execute("SELECT pg_catalog.pg_notify(%s, %s)", (self.settings.channel, token))
        for note in bell.notifies(timeout=LISTEN_PROBE_TIMEOUT_S):
            if note.payload == token:
                return
        raise PermanentError(
            "LISTEN on this connection never heard our own NOTIFY; a transaction-mode PgBouncer (or another "
            "transaction pooler) cannot carry LISTEN/NOTIFY: point --dsn at PostgreSQL or a session-mode pool"
        )

    # -- the async iterator ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[AwardEvent]:
        return self._async_events()

    async def _async_events(self) -> AsyncIterator[AwardEvent]:
        """The plain iterator, run in a thread; a hand-off queue of one keeps at most one event in flight."""
        handoff: queue.Queue[AwardEvent | BaseException | None] = queue.Queue(maxsize=1)

        def offer(item: AwardEvent | BaseException | None) -> bool:
            while not self.closed:
                try:
                    handoff.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False  # the consumer left: drop it (an unfinished batch is rolled back)

        def pump() -> None:
            try:
                for event in self:
                    if not offer(event):
                        return
            except BaseException as exc:  # handed to the consumer
                offer(exc)
                return
            offer(None)

        thread = threading.Thread(target=pump, name="badged-subscribe", daemon=True)
        thread.start()
        try:
            while (item := await asyncio.to_thread(handoff.get)) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()
            await asyncio.to_thread(thread.join, 5.0)


def subscribe(dsn: str, group: str | None = None, since: int | None = None, **options: Any) -> Subscription:
    """Award events from *dsn*, oldest first; ``for event in subscribe(...)`` or ``async for``."""
    return Subscription(dsn, group=group, since=since, **options)


class _Statements:
    def __init__(self, settings: Settings) -> None:
        schema = sql.Identifier(settings.schema)
        award = sql.SQL("{}.{}").format(schema, sql.Identifier(AWARD_TABLE))
        badge = sql.SQL("{}.{}").format(schema, sql.Identifier(BADGE_TABLE))
        group = sql.SQL("{}.{}").format(schema, sql.Identifier(GROUP_TABLE))
        # The delta between two snapshots, read in (txid, id) order along the (txid, id)
        # index, resuming after the last pair delivered: each batch is one index range scan.
        self.fetch = sql.SQL("""
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
        self.lock_group = sql.SQL(
            "SELECT snapshot::text, upto::text, after_txid::text::int8, after_id, min_id FROM {}"
            " WHERE name = %s FOR UPDATE SKIP LOCKED"
        ).format(group)
        self.save_group = sql.SQL(
            "UPDATE {} SET snapshot = %s::pg_snapshot, upto = %s::pg_snapshot, after_txid = %s::text::xid8,"
            " after_id = %s, min_id = %s, delivered = delivered + %s, updated_at = now() WHERE name = %s"
        ).format(group)
        self.create_group = sql.SQL(
            "INSERT INTO {} (name, snapshot, min_id) VALUES (%s, %s::pg_snapshot, %s)"
            " ON CONFLICT (name) DO NOTHING"
        ).format(group)
