"""Subscribe to badge-earned events: ``badged.subscribe()``, ``badged listen`` and every sink.

Nothing is lost while no one listens, because the award table is the source of
truth and NOTIFY only rings the doorbell:

1. LISTEN on a connection of its own (psycopg's ``notifies()`` needs one), and prove it
   hears a NOTIFY on a private channel of its own (a transaction pooler drops LISTEN);
2. catch up from the award table, in batches, from a ``Position`` (see ``events``);
3. wait for a notification (or a short poll), then read again from the position.

Without a group the position lives in memory and starts "now" (or ``since``).
With ``group=NAME`` it lives in ``<schema>.consumer_group``: a batch is read, handed
over and the position advanced in one transaction holding the group's row
``FOR UPDATE SKIP LOCKED``, so several processes of one group share the work
without duplicates. The position is saved when the consumer asks for the event
after a batch's last, i.e. once it has handled every event of the batch: a crash,
an exception or a ``break`` before that rolls the batch back, and it is handed out
again (at-least-once; exact across clean stops).

``for event in sub`` runs on psycopg's ``Connection``; ``async for event in sub`` runs
natively on its ``AsyncConnection`` (no thread), so cancelling the task that iterates
ends it at once. Both speak the same protocol (``event_sql``). ``with`` / ``async with``
close the subscription and roll back a batch left unfinished.

Temporary database errors (by SQLSTATE, see ``db_errors``: a lost connection, a
restart, a timeout) are retried with backoff on new connections; permanent ones (a
missing right) end the iteration with a clear error, as does a DSN whose LISTEN never
hears its own NOTIFY.

``close()`` lets the batch in hand finish and its position be saved; a query still
unanswered ``CLOSE_GRACE_S`` later (a stalled proxy answers nothing and closes
nothing) has its connection cut (``db.sever``): the batch is rolled back and handed
out again later, and the iteration ends all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType
from typing import Any

import psycopg
from psycopg import pq

from badged.backoff import Backoff
from badged.db import connect, connect_async, sever
from badged.db_errors import temporary_or_raise
from badged.errors import BadgedError, ConfigError, ConnectionFailed, PermanentError
from badged.event_sql import CURRENT_SNAPSHOT, LISTEN_UNHEARD, NOTIFY, EventStatements, listen, probe_channel, unlisten
from badged.events import AwardEvent, Position
from badged.logs import get_logger
from badged.settings import Settings

log = get_logger("badged.listen")

#: How long to wait for our own NOTIFY before deciding LISTEN cannot work here.
LISTEN_PROBE_TIMEOUT_S = 3.0
#: After close(), how long the batch in hand may take before the connections are cut.
CLOSE_GRACE_S = 2.0
#: The longest a wait for the doorbell goes without looking at close().
_WAKE_STEP_S = 0.5

_AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


class Subscription:
    """Award events as a plain iterator and an async iterator, reconnecting by itself."""

    def __init__(self, dsn: str, *, group: str | None = None, since: int | None = None,
                 settings: Settings | None = None, batch_size: int = 1000, poll_interval: float = 1.0) -> None:
        if group is not None and not group.strip():
            raise ConfigError("the group name must not be empty")
        if batch_size < 1:
            raise ConfigError("batch size must be at least 1")
        if poll_interval <= 0:
            raise ConfigError("the poll interval must be positive")
        self.dsn = dsn
        self.group = group
        self.since = since
        self.settings = settings or Settings()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._closed = threading.Event()
        self._position: Position | None = None
        self._sql = EventStatements(self.settings)
        #: the connections of the session in progress, for close() to cut if the network stalls
        self._live: set[_AnyConnection] = set()
        self._live_lock = threading.Lock()
        #: iterations begun, for ``with`` / ``async with`` to end (rolling back an unfinished batch)
        #: (weakly: one the consumer dropped is closed by the garbage collector, as any generator)
        self._iterations: weakref.WeakSet[Generator[AwardEvent, None, None]] = weakref.WeakSet()
        self._async_iterations: weakref.WeakSet[AsyncGenerator[AwardEvent, None]] = weakref.WeakSet()

    # -- closing ----------------------------------------------------------------------

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

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
        for iteration in list(self._iterations):
            iteration.close()  # a batch left unfinished is rolled back: handed out again later

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """``close()``, then end the async iterations at once (an unfinished batch is rolled back).

        One that another task is running (waiting inside it) cannot be closed from here; the closed flag ends
        it within half a second.
        """
        self.close()
        for iteration in list(self._async_iterations):
            if getattr(iteration, "ag_await", None) is None and not getattr(iteration, "ag_running", False):
                await iteration.aclose()

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

    def _track(self, conn: _AnyConnection, live: bool) -> None:
        with self._live_lock:
            if live:
                self._live.add(conn)
            else:
                self._live.discard(conn)

    def _retry_delay(self, exc: psycopg.Error | BadgedError, backoff: Backoff) -> float | None:
        """After *exc* ended a session: the wait before the next, None when closed; raise what is permanent."""
        if self.closed:
            return None  # cut by close(): nothing to retry
        error = temporary_or_raise(exc, "read awards")
        delay = backoff.next_delay()
        log.warning("listen.reconnect", error=str(error), cause=error.cause, retry_in=round(delay, 2))
        return delay

    def _started(self, backoff: Backoff) -> None:
        backoff.reset()
        log.info("listen.started", group=self.group, channel=self.settings.channel)

    # -- the plain iterator ------------------------------------------------------------

    def __iter__(self) -> Generator[AwardEvent, None, None]:
        iteration = self._events()
        self._iterations.add(iteration)
        return iteration

    def _events(self) -> Generator[AwardEvent, None, None]:
        backoff = Backoff()
        while not self.closed:
            try:
                yield from self._session(backoff)
            except (psycopg.Error, BadgedError) as exc:
                delay = self._retry_delay(exc, backoff)
                if delay is None:
                    return
                self._closed.wait(delay)

    def _session(self, backoff: Backoff) -> Iterator[AwardEvent]:
        with self._connect() as work, self._connect() as bell:
            self._sql.require_tables(work.execute(*self._sql.tables_exist()).fetchone(), self.group)
            self._probe_listen(work, bell)
            bell.execute(listen(self.settings.channel))
            if self.group is not None:
                work.execute(*self._sql.create_group(self.group, self._start_position(work)))
            elif self._position is None:
                self._position = self._start_position(work)
            self._started(backoff)
            while not self.closed:
                if self.group is not None:
                    yield from self._drain_group(work, self.group)
                elif self._position is not None:  # set above
                    yield from self._drain_memory(work, self._position)
                self._wait_for_doorbell(bell)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of this session, which close() may cut; closed at the end."""
        conn = connect(self.dsn, self.settings, stop=self._closed)
        self._track(conn, live=True)
        try:
            with conn:
                yield conn
        finally:
            self._track(conn, live=False)

    def _wait_for_doorbell(self, bell: psycopg.Connection[Any]) -> None:
        """Return on a notification, after poll_interval, or soon after close()."""
        deadline = time.monotonic() + self.poll_interval
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            if any(True for _ in bell.notifies(timeout=min(_WAKE_STEP_S, left), stop_after=1)):
                for _ in bell.notifies(timeout=0):  # swallow the rest of the burst: one read serves all
                    pass
                return

    def _drain_memory(self, work: psycopg.Connection[Any], position: Position) -> Iterator[AwardEvent]:
        while True:
            upto, batch = self._fetch(work, position)
            for _txid, event in batch:
                yield event
            position = self._position = position.advance(upto, batch, self.batch_size)
            if len(batch) < self.batch_size or self.closed:
                return

    def _drain_group(self, work: psycopg.Connection[Any], group: str) -> Iterator[AwardEvent]:
        while not self.closed:
            with work.transaction():
                row = work.execute(*self._sql.lock_group(group)).fetchone()
                if row is None:
                    return  # another member of the group holds it; the doorbell or the poll brings us back
                position = Position(*row)
                upto, batch = self._fetch(work, position)
                for _txid, event in batch:
                    yield event  # resumed when the consumer wants the next: it has handled this one
                after = position.advance(upto, batch, self.batch_size)
                work.execute(*self._sql.save_group(group, after, len(batch)))
            if len(batch) < self.batch_size:
                return

    def _fetch(self, work: psycopg.Connection[Any],
               position: Position) -> tuple[str, list[tuple[int, AwardEvent]]]:
        """The next batch of the delta from *position*, and the snapshot that delta ends at."""
        upto = position.upto or self._current_snapshot(work)
        rows = work.execute(*self._sql.fetch(position, upto, self.batch_size)).fetchall()
        return upto, self._sql.read_batch(rows)

    def _current_snapshot(self, work: psycopg.Connection[Any]) -> str:
        return _snapshot(work.execute(CURRENT_SNAPSHOT).fetchone())

    def _start_position(self, work: psycopg.Connection[Any]) -> Position:
        snapshot = None if self.since is not None else self._current_snapshot(work)
        return self._sql.start_position(self.since, snapshot)

    def _probe_listen(self, work: psycopg.Connection[Any], bell: psycopg.Connection[Any]) -> None:
        """Prove the doorbell rings, on a private channel (listeners of the public one parse its payloads as
        JSON): a transaction-mode pooler silently drops LISTEN. Done before LISTEN on the public channel."""
        channel = probe_channel()
        bell.execute(listen(channel))
        work.execute(NOTIFY, (channel,))
        heard = False
        with contextlib.closing(bell.notifies(timeout=LISTEN_PROBE_TIMEOUT_S)) as notes:
            for note in notes:
                if note.channel == channel:
                    heard = True
                    break
        if not heard:
            raise PermanentError(LISTEN_UNHEARD)
        bell.execute(unlisten(channel))

    # -- the async iterator ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[AwardEvent]:
        iteration = self._async_events()
        self._async_iterations.add(iteration)
        return iteration

    async def _async_events(self) -> AsyncGenerator[AwardEvent, None]:
        backoff = Backoff()
        while not self.closed:
            try:
                # aclosing: unlike ``yield from``, ``async for … yield`` does not close the inner generator when
                # the outer one is closed; without it the batch's transaction stayed open until the GC ran
                async with contextlib.aclosing(self._async_session(backoff)) as session:
                    async for event in session:
                        yield event
            except (psycopg.Error, BadgedError) as exc:
                delay = self._retry_delay(exc, backoff)
                if delay is None:
                    return
                await self._async_sleep(delay)

    async def _async_session(self, backoff: Backoff) -> AsyncGenerator[AwardEvent, None]:
        async with self._async_connect() as work, self._async_connect() as bell:
            cursor = await work.execute(*self._sql.tables_exist())
            self._sql.require_tables(await cursor.fetchone(), self.group)
            await self._async_probe_listen(work, bell)
            await bell.execute(listen(self.settings.channel))
            if self.group is not None:
                await work.execute(*self._sql.create_group(self.group, await self._async_start_position(work)))
            elif self._position is None:
                self._position = await self._async_start_position(work)
            self._started(backoff)
            while not self.closed:
                if self.group is not None:
                    drain = self._async_drain_group(work, self.group)
                elif self._position is not None:  # set above
                    drain = self._async_drain_memory(work, self._position)
                else:
                    break
                async with contextlib.aclosing(drain) as events:
                    async for event in events:
                        yield event
                await self._async_wait_for_doorbell(bell)

    @contextlib.asynccontextmanager
    async def _async_connect(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of this session, which close() may cut; an attempt is abandoned soon after close()."""
        attempt = asyncio.ensure_future(connect_async(self.dsn, self.settings))
        while not attempt.done():
            await asyncio.wait({attempt}, timeout=_WAKE_STEP_S)
            if self.closed and not attempt.done():
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                raise ConnectionFailed("cannot connect to the database: given up, stopping")
        conn = attempt.result()
        self._track(conn, live=True)
        try:
            async with conn:
                yield conn
        finally:
            self._track(conn, live=False)

    async def _async_sleep(self, seconds: float) -> None:
        """Sleep *seconds*, or until close()."""
        deadline = time.monotonic() + seconds
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(_WAKE_STEP_S, left))

    async def _async_wait_for_doorbell(self, bell: psycopg.AsyncConnection[Any]) -> None:
        deadline = time.monotonic() + self.poll_interval
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            # notifies() ends by itself here (stop_after, timeout 0): read to the end, it lets go of the connection
            if [note async for note in bell.notifies(timeout=min(_WAKE_STEP_S, left), stop_after=1)]:
                async for _ in bell.notifies(timeout=0):
                    pass
                return

    async def _async_drain_memory(self, work: psycopg.AsyncConnection[Any],
                                  position: Position) -> AsyncGenerator[AwardEvent, None]:
        while True:
            upto, batch = await self._async_fetch(work, position)
            for _txid, event in batch:
                yield event
            position = self._position = position.advance(upto, batch, self.batch_size)
            if len(batch) < self.batch_size or self.closed:
                return

    async def _async_drain_group(self, work: psycopg.AsyncConnection[Any],
                                 group: str) -> AsyncGenerator[AwardEvent, None]:
        while not self.closed:
            async with work.transaction():
                cursor = await work.execute(*self._sql.lock_group(group))
                row = await cursor.fetchone()
                if row is None:
                    return
                position = Position(*row)
                upto, batch = await self._async_fetch(work, position)
                for _txid, event in batch:
                    yield event  # resumed when the consumer wants the next: it has handled this one
                after = position.advance(upto, batch, self.batch_size)
                await work.execute(*self._sql.save_group(group, after, len(batch)))
            if len(batch) < self.batch_size:
                return

    async def _async_fetch(self, work: psycopg.AsyncConnection[Any],
                           position: Position) -> tuple[str, list[tuple[int, AwardEvent]]]:
        upto = position.upto or await self._async_current_snapshot(work)
        cursor = await work.execute(*self._sql.fetch(position, upto, self.batch_size))
        return upto, self._sql.read_batch(await cursor.fetchall())

    async def _async_current_snapshot(self, work: psycopg.AsyncConnection[Any]) -> str:
        return _snapshot(await (await work.execute(CURRENT_SNAPSHOT)).fetchone())

    async def _async_start_position(self, work: psycopg.AsyncConnection[Any]) -> Position:
        snapshot = None if self.since is not None else await self._async_current_snapshot(work)
        return self._sql.start_position(self.since, snapshot)

    async def _async_probe_listen(self, work: psycopg.AsyncConnection[Any],
                                  bell: psycopg.AsyncConnection[Any]) -> None:
        channel = probe_channel()
        await bell.execute(listen(channel))
        await work.execute(NOTIFY, (channel,))
        heard = False
        # closed at once when left early: until then it holds the connection's lock, and UNLISTEN would wait
        async with contextlib.aclosing(bell.notifies(timeout=LISTEN_PROBE_TIMEOUT_S)) as notes:
            async for note in notes:
                if note.channel == channel:
                    heard = True
                    break
        if not heard:
            raise PermanentError(LISTEN_UNHEARD)
        await bell.execute(unlisten(channel))


def _snapshot(row: tuple[Any, ...] | None) -> str:
    if row is None:  # a SELECT of one value answers one row; a proxy that says otherwise is not PostgreSQL
        raise ConnectionFailed("cannot read the current snapshot: the server answered no row")
    return str(row[0])


def subscribe(dsn: str, *, group: str | None = None, since: int | None = None, settings: Settings | None = None,
              batch_size: int = 1000, poll_interval: float = 1.0) -> Subscription:
    """Award events from *dsn*, oldest first: ``for event in subscribe(...)`` or ``async for``.

    *group* keeps the position in the database, shared by every process of that name (at-least-once);
    without it the position lives in memory and starts now, or after award *since*. *settings* name
    badged's schema and channel; *batch_size* awards are read per query; *poll_interval* seconds is the
    longest wait without a NOTIFY. Use it in ``with`` / ``async with`` to close it on the way out.
    """
    return Subscription(dsn, group=group, since=since, settings=settings, batch_size=batch_size,
                        poll_interval=poll_interval)
