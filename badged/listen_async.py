"""``async for event in subscription``: the protocol of ``badged.listen`` natively on psycopg's ``AsyncConnection``.

No thread: cancelling the task that iterates ends it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType
from typing import Any, Self

import psycopg

from badged.backoff import Backoff
from badged.db import connect_async
from badged.errors import BadgedError, ConnectionFailed, PermanentError
from badged.event_sql import CURRENT_SNAPSHOT, LISTEN_UNHEARD, NOTIFY, listen, probe_channel, unlisten
from badged.events import AwardEvent, Position
from badged.listen_base import LISTEN_PROBE_TIMEOUT_S, WAKE_STEP_S, SubscriptionBase, snapshot_of


class AsyncIteration(SubscriptionBase):
    """The async iterator, and ``async with``."""

    async def __aenter__(self) -> Self:
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
            await asyncio.wait({attempt}, timeout=WAKE_STEP_S)
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
            await asyncio.sleep(min(WAKE_STEP_S, left))

    async def _async_wait_for_doorbell(self, bell: psycopg.AsyncConnection[Any]) -> None:
        deadline = time.monotonic() + self.poll_interval
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            # notifies() ends by itself here (stop_after, timeout 0): read to the end, it lets go of the connection
            if [note async for note in bell.notifies(timeout=min(WAKE_STEP_S, left), stop_after=1)]:
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
        upto = position.upto or await self._async_currentsnapshot_of(work)
        cursor = await work.execute(*self._sql.fetch(position, upto, self.batch_size))
        return upto, self._sql.read_batch(await cursor.fetchall())

    async def _async_currentsnapshot_of(self, work: psycopg.AsyncConnection[Any]) -> str:
        return snapshot_of(await (await work.execute(CURRENT_SNAPSHOT)).fetchone())

    async def _async_start_position(self, work: psycopg.AsyncConnection[Any]) -> Position:
        snapshot = None if self.since is not None else await self._async_currentsnapshot_of(work)
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
