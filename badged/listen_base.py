"""What both ways of iterating a ``Subscription`` share: its options, closing (cutting a stalled query), retrying.

See ``badged.listen`` for the protocol; ``listen_sync`` and ``listen_async`` run it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import AsyncGenerator, Generator
from typing import Any

import psycopg
from psycopg import pq

from badged.backoff import Backoff
from badged.db import sever
from badged.db_errors import temporary_or_raise
from badged.errors import BadgedError, ConfigError, ConnectionFailed
from badged.event_sql import EventStatements
from badged.events import AwardEvent, Position
from badged.logs import get_logger
from badged.settings import Settings

log = get_logger("badged.listen")

#: How long to wait for our own NOTIFY before deciding LISTEN cannot work here.
LISTEN_PROBE_TIMEOUT_S = 3.0
#: After close(), how long the batch in hand may take before the connections are cut.
CLOSE_GRACE_S = 2.0
#: The longest a wait for the doorbell goes without looking at close().
WAKE_STEP_S = 0.5

AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


class SubscriptionBase:
    """A subscription's options and state, and how it closes and retries."""

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
        self._live: set[AnyConnection] = set()
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

    def _track(self, conn: AnyConnection, live: bool) -> None:
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


def snapshot_of(row: tuple[Any, ...] | None) -> str:
    if row is None:  # a SELECT of one value answers one row; a proxy that says otherwise is not PostgreSQL
        raise ConnectionFailed("cannot read the current snapshot: the server answered no row")
    return str(row[0])
