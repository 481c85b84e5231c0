"""The reconcile worker: runs each pass in a thread of its own on one persistent connection, and ends it in time.

The event loop only waits on it. A pass that runs longer than *stall_after* is stalled (PostgreSQL would have
ended any one statement by then, so the network holds it up): the stall check fails /readyz from that moment,
and the connection is cut so that the pass fails and is retried. On shutdown a pass in flight gets
SHUTDOWN_GRACE_S to commit, then is cancelled (its transaction rolls back); if the cancel request does not get
through, the connection is cut, and a thread that still does not return is left behind (``Abandoned``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import psycopg

from badged.db import connect, sever
from badged.errors import BadgedError, Cause, ConnectionFailed, describe_error
from badged.logs import get_logger
from badged.plan import Outcome
from badged.settings import Settings
from badged.spec import Badge

# the daemon's logger: these events came from it before the worker had a module of its own, and whoever
# filters on it keeps seeing them
log = get_logger("badged.daemon")

#: How long a reconcile in flight may go on after SIGTERM before it is cancelled.
SHUTDOWN_GRACE_S = 1.0
#: How long the cancel request may take (it opens a connection of its own, which a stalled network holds up).
CANCEL_TIMEOUT_S = 0.5
#: After the connection was cut, how long to wait for the worker before leaving it behind.
ABANDON_AFTER_S = 0.5
#: Errors after which the reconcile connection is replaced (a new one may reach another server, or the same anew).
_NEW_CONNECTION = frozenset({Cause.CONNECTION, Cause.RESOURCES, Cause.READ_ONLY})

#: What one pass does on the worker's connection (the daemon's: reconcile and apply).
Apply = Callable[[psycopg.Connection[Any], tuple[Badge, ...]], Outcome]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Abandoned(Exception):
    """Shutting down: the reconcile worker did not return in time and was left behind."""


class ReconcileWorker:
    """Runs passes one at a time (the daemon awaits each) on a connection it opens, and replaces when lost."""

    def __init__(self, dsn: str, settings: Settings, stall_after: float, stop: asyncio.Event, apply: Apply) -> None:
        self._dsn = dsn
        self._settings = settings
        self._stall_after = stall_after
        self._stop = stop
        self._apply = apply
        self._conn: psycopg.Connection[Any] | None = None
        #: when the pass in flight started (monotonic), for the stall check
        self._pass_started: float | None = None
        #: a thread is in a pass (it may outlive the pass's await when left behind)
        self._running = False

    def stalled(self) -> str | None:
        """The /readyz check: why the pass in flight is stalled, or None."""
        started = self._pass_started
        if started is None:
            return None
        running, bound = time.monotonic() - started, self._stall_after
        if running <= bound:
            return None
        return (f"a pass has been running for {running:.0f} s, longer than {bound:g} s: the database or the network "
                "is stalled")

    async def run(self, badges: tuple[Badge, ...]) -> Outcome:
        """One pass; raises what it raised, ConnectionFailed when it stalled, Abandoned when left behind."""
        started = self._pass_started = time.monotonic()
        self._running = True
        work = in_thread(self._reconcile_blocking, badges)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({work, stopping}, timeout=self._stall_after,
                                         return_when=asyncio.FIRST_COMPLETED)
            stalled = not done
            if stalled:
                # PostgreSQL would have ended any one statement by now: the network holds the pass up
                log.warning("reconcile.stalled", seconds=round(time.monotonic() - started, 1), bound=self._stall_after)
                self._cut()
                await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await self._wind_down(work)
            try:
                return await work
            except ConnectionFailed as exc:
                if not stalled:
                    raise
                raise ConnectionFailed(
                    f"cannot reconcile: the pass stalled, the database did not answer for "
                    f"{self._stall_after:g} s (the network or the server is stalled), so its connection "
                    f"was cut; retry later ({exc})") from None
        finally:
            stopping.cancel()
            self._pass_started = None

    async def _wind_down(self, work: asyncio.Future[Outcome]) -> None:
        """Shutting down: let the transaction finish if it is about to, else cancel it (PostgreSQL rolls it
        back); if the cancel request does not get through (a stalled network), cut the connection; leave a
        worker behind that still does not return. Raise Abandoned in that case."""
        done, _ = await asyncio.wait({work}, timeout=SHUTDOWN_GRACE_S)
        if done:
            return
        conn = self._conn
        if conn is not None:
            await asyncio.wait({in_thread(_cancel_quietly, conn)}, timeout=CANCEL_TIMEOUT_S + 0.2)
            done, _ = await asyncio.wait({work}, timeout=0.2)
            if done:
                return
            log.warning("daemon.cut", reason="the reconcile in flight did not end after a cancel request")
            sever(conn)
        done, _ = await asyncio.wait({work}, timeout=ABANDON_AFTER_S)
        if not done:
            log.warning("daemon.abandoned", reason="the reconcile worker did not return; exiting without it")
            raise Abandoned

    def _cut(self) -> None:
        conn = self._conn
        if conn is not None:
            sever(conn)

    # the thread's name comes from this method's: badged-reconcile_blocking
    def _reconcile_blocking(self, badges: tuple[Badge, ...]) -> Outcome:
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                self._close()
                conn = self._conn = connect(self._dsn, self._settings)
            try:
                return self._apply(conn, badges)
            except BaseException as exc:
                if not isinstance(exc, BadgedError) or exc.cause in _NEW_CONNECTION:
                    self._close()  # lost, or in a state nobody can vouch for: start the next pass afresh
                raise
        finally:
            self._running = False

    def _close(self) -> None:
        """Close the reconcile connection (from the worker, or when no worker runs)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close_at_exit(self) -> None:
        if self._running:
            self._cut()  # a worker left behind still uses it: cut it, never free it under its feet
            self._conn = None
        else:
            self._close()


def in_thread(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> asyncio.Future[_T]:
    """Run *fn* in a daemon thread of its own: unlike asyncio.to_thread's pool, one that a stalled network
    holds up never keeps the process from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            outcome: tuple[_T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the daemon has exited without us
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=f"badged-{getattr(fn, '__name__', 'work').strip('_')}", daemon=True).start()
    return future


def _cancel_quietly(conn: psycopg.Connection[Any]) -> None:
    """Ask the server to cancel what *conn* runs; a cancel that fails or times out is not an error here."""
    try:
        conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)
    except Exception as exc:
        log.info("daemon.cancel_failed", error=describe_error(exc))
