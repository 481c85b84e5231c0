"""``for event in subscription``: the protocol of ``badged.listen`` on psycopg's ``Connection``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Any, Self

import psycopg

from badged.backoff import Backoff
from badged.db import connect
from badged.errors import BadgedError, PermanentError
from badged.event_sql import CURRENT_SNAPSHOT, LISTEN_UNHEARD, NOTIFY, listen, probe_channel, unlisten
from badged.events import AwardEvent, Position
from badged.listen_base import LISTEN_PROBE_TIMEOUT_S, WAKE_STEP_S, SubscriptionBase, snapshot_of


class SyncIteration(SubscriptionBase):
    """The plain iterator, and ``with``."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
        for iteration in list(self._iterations):
            iteration.close()  # a batch left unfinished is rolled back: handed out again later

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
            if any(True for _ in bell.notifies(timeout=min(WAKE_STEP_S, left), stop_after=1)):
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
        upto = position.upto or self._currentsnapshot_of(work)
        rows = work.execute(*self._sql.fetch(position, upto, self.batch_size)).fetchall()
        return upto, self._sql.read_batch(rows)

    def _currentsnapshot_of(self, work: psycopg.Connection[Any]) -> str:
        return snapshot_of(work.execute(CURRENT_SNAPSHOT).fetchone())

    def _start_position(self, work: psycopg.Connection[Any]) -> Position:
        snapshot = None if self.since is not None else self._currentsnapshot_of(work)
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
