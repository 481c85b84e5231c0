"""``badged run``: keep the database reconciled with badge.json, forever.

A level-based control loop, in the manner of a Kubernetes controller:

* it wakes on a source change, on the resync timer (default 60 s, which also
  repairs drift made by hand), or on a retry after a failure;
* it re-reads the whole badge.json and compares its hash (events are only hints);
* a *temporary* failure (database down, lock or statement timeout, deadlock) is
  retried with exponential backoff and full jitter, capped at 30 s: never a crash
  loop, never a spin; after a lock timeout the first retry waits several
  lock_timeouts, so that retries do not queue the application's writes again and again;
* a *permanent* one about badge.json (invalid, missing table) changes nothing, so
  the last good state stays applied, makes /readyz fail, and waits for the next
  change or resync; one the database causes (a missing right: ``cause`` is set) is
  retried with backoff, since nothing announces the GRANT that fixes it;
* anything else (a bug, an unexpected exception) is recovered where the loop is, as
  controller-runtime recovers a panic: logged with its traceback, /readyz fails with
  the reason, and the pass is retried with backoff. Only SIGTERM/SIGINT end the loop;
* a pass that runs longer than ``statement_timeout + lock_timeout + 5 s`` is stalled
  (PostgreSQL would have ended any statement by then, so the network holds it up):
  /readyz fails from that moment, and its connection is cut so that it fails and is
  retried;
* SIGTERM/SIGINT end it with exit 0 within a few seconds, even when the network
  stalls: a reconcile in flight gets 1 s to commit, then is cancelled (its transaction
  rolls back); if the cancel request does not get through, the connection is cut, and
  a worker that still does not return is left behind;
* after the first success, background tasks start: the drain of deferred badge
  checks (``recheck``) and one forwarder per sink (webhook, NATS; ``forwarder``), each
  an asyncio task reading its own consumer group. They, the watch of the source and the
  HTTP server are supervised: one that dies makes /readyz fail naming it, is counted
  in ``badged_task_failures_total{task}``, and is started again with backoff.

Reconciles run in a worker thread with one persistent connection; the event loop
only waits. Several replicas are safe: the advisory lock in ``reconcile`` makes one
apply while the others find nothing to do.

This module holds the control loop; the worker thread, its stall check and its wind-down are in
``reconcile_worker``, the restart of background tasks in ``supervisor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

from badged.backoff import Backoff
from badged.db import connect, describe
from badged.errors import BadgedError, Cause, PermanentError, SourceError, SpecError, TemporaryError, describe_error
from badged.health import Health, HealthServer
from badged.logs import get_logger
from badged.metrics import Metrics
from badged.plan import Outcome
from badged.recheck import Drained, RecheckWorker
from badged.reconcile import reconcile
from badged.reconcile_worker import Abandoned, ReconcileWorker
from badged.settings import Settings
from badged.sink_tasks import SinkSpec, SinkTasks
from badged.sources import Source
from badged.spec import Badge, parse_badges
from badged.supervisor import Supervisor

log = get_logger("badged.daemon")

#: A pass running longer than statement_timeout + lock_timeout + this is stalled.
STALL_SLACK_S = 5.0
#: After a lock timeout, the backoff starts at this many lock_timeouts (each try queues app writes that long).
LOCK_BACKOFF_FACTOR = 4.0


class Wake(StrEnum):
    """Why a pass runs (logged as ``daemon.pass reason=…``)."""

    STARTUP = "startup"
    #: the source changed (a hint: the whole badge.json is read again)
    CHANGE = "change"
    #: the resync timer (repairs drift made by hand)
    RESYNC = "resync"
    #: the backoff after a failure ended
    RETRY = "retry"
    STOP = "stop"


@dataclass(frozen=True)
class DaemonOptions:
    dsn: str
    settings: Settings
    resync_seconds: float = 60.0
    allow_empty: bool = False
    http: str | None = ":8080"
    #: where badge-earned events go, each from its own consumer group
    sinks: tuple[SinkSpec, ...] = ()
    #: how often to finish the badge checks triggers deferred (see ``recheck``)
    recheck_seconds: float = 1.0
    #: a pass running longer than this is stalled; None: statement_timeout + lock_timeout + STALL_SLACK_S
    stall_seconds: float | None = None

    @property
    def stall_after(self) -> float:
        if self.stall_seconds is not None:
            return self.stall_seconds
        return (self.settings.statement_timeout_ms + self.settings.lock_timeout_ms) / 1000 + STALL_SLACK_S


class _Recheck(RecheckWorker):
    """``recheck``'s worker, keeping what ended its thread: its loop retries database errors, nothing else."""

    failure: BaseException | None = None

    def _run(self) -> None:
        try:
            super()._run()
        except Exception as exc:  # reported and restarted by the daemon's supervisor
            self.failure = exc


class Daemon:
    def __init__(self, source: Source, options: DaemonOptions, metrics: Metrics | None = None) -> None:
        self.source = source
        self.options = options
        self.metrics = metrics or Metrics()
        self.health = Health()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._backoff = Backoff()
        self._lock_backoff = Backoff(base=max(1.0, LOCK_BACKOFF_FACTOR * options.settings.lock_timeout_ms / 1000))
        self._retry_after: float | None = None
        self._last_digest: str | None = None
        self._parsed: tuple[str, tuple[Badge, ...]] | None = None
        self._last_ok = False
        self._worker = ReconcileWorker(options.dsn, options.settings, options.stall_after, self._stop, self._apply)
        self._supervisor = Supervisor(self.health, self.metrics, self._stop)
        self._server: HealthServer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._sinks = SinkTasks(options.dsn, options.settings, self.metrics, stopping=self._stop.is_set)
        self._recheck: _Recheck | None = None
        self._badges: tuple[Badge, ...] = ()
        self.health.add_check("reconcile", self._worker.stalled)
        self.metrics.ready.set_function(lambda: 1.0 if self.health.get()[0] else 0.0)

    def stop(self) -> None:
        self._stop.set()

    @property
    def http_port(self) -> int | None:
        """The port /healthz, /readyz and /metrics are served on (None without --http)."""
        return self._server.port if self._server else None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.options.http:
            self._server = HealthServer(self.options.http, self.health, self.metrics)
            self._server.start()
            # restarted on the same address: while it is down the probes cannot connect (the kubelet counts that)
            self._supervisor.supervise("http", lambda: self._server.failure if self._server else None,
                                       self._restart_http)
        self._watcher = asyncio.create_task(self._watch(), name="badged-watch")
        # restarted: watching is level-based, a new watch and a pass (the wake below) miss nothing
        self._supervisor.supervise("watch", self._watch_failure, self._restart_watch)
        supervisor = asyncio.create_task(self._supervisor.run(), name="badged-supervisor")
        log.info("daemon.started", source=self.source.description, dsn=describe(self.options.dsn),
                 resync_seconds=self.options.resync_seconds, schema=self.options.settings.schema,
                 prefix=self.options.settings.prefix, stall_after=self.options.stall_after)
        try:
            reason = Wake.STARTUP
            while not self._stop.is_set():
                try:
                    await self._pass(reason)
                except Exception as exc:  # recovered here, once, like controller-runtime recovers a panic
                    self._crashed(exc)
                reason = await self._sleep()
        finally:
            await self._shutdown(supervisor)
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("daemon.stopping", signal=sig.name)
        self._stop.set()

    async def _shutdown(self, supervisor: asyncio.Task[None]) -> None:
        """Stop everything, each step bounded and none able to turn the exit code into 1."""
        supervisor.cancel()
        tasks: list[asyncio.Task[None]] = [supervisor]
        if self._watcher is not None:
            self._watcher.cancel()
            tasks.append(self._watcher)
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, timeout=1.0)
        await self._sinks.stop()
        recheck, server = self._recheck, self._server
        steps: list[Callable[[], None]] = []
        if recheck is not None:
            steps.append(lambda: recheck.stop(timeout=0.25))
        if server is not None:
            steps.append(server.stop)
        steps.append(self._worker.close_at_exit)
        for step in steps:
            try:
                step()
            except Exception as exc:
                log.warning("daemon.stop_step_failed", error=describe_error(exc))
        log.info("daemon.stopped")

    async def _watch(self) -> None:
        async for _ in self.source.changes(self._stop):
            self._wake.set()

    async def _sleep(self) -> Wake:
        """Wait for a change, the resync timer, a retry, or stop; say which."""
        if self._retry_after is not None:
            # A database that is failing is not helped by trying sooner: changes made meanwhile wait for
            # the retry, which reads the source anew (every event used to cut the backoff short).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._retry_after)
            self._wake.clear()
            return Wake.STOP if self._stop.is_set() else Wake.RETRY
        # +-10 % so that replicas started together drift apart
        timeout, reason = self.options.resync_seconds * random.uniform(0.9, 1.1), Wake.RESYNC  # noqa: S311
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())}
        _done, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        if self._stop.is_set():
            return Wake.STOP
        if self._wake.is_set():
            self._wake.clear()
            return Wake.CHANGE
        return reason

    async def _pass(self, reason: Wake) -> None:
        """One level-based pass: read, validate, reconcile; record the outcome."""
        self._retry_after = None
        try:
            text = self.source.read()
        except SourceError as exc:
            self._failed("source.unreadable", exc, metric_reason="unreadable")
            return
        digest = hashlib.sha256(text.encode()).hexdigest()
        if reason is Wake.CHANGE and digest == self._last_digest and self._last_ok:
            return  # an event that did not change the content (another file, a touch)
        self._last_digest = digest
        if self._parsed is not None and self._parsed[0] == digest:
            badges = self._parsed[1]  # a resync of unchanged content: parsing 1,000 conditions costs ~1 s
        else:
            try:
                badges = parse_badges(text, source=self.source.description, prefix=self.options.settings.prefix,
                                      allow_empty=self.options.allow_empty, schema=self.options.settings.schema)
            except SpecError as exc:
                self._failed("source.invalid", exc, metric_reason="invalid")
                return
            self._parsed = (digest, badges)
        self.metrics.badges_desired.set(len(badges))
        started = time.monotonic()
        try:
            outcome = await self._worker.run(badges)
        except Abandoned:
            return
        except BadgedError as exc:
            if isinstance(exc, PermanentError) and exc.cause is None:
                # badge.json does not fit: nothing to retry until it changes (or the resync comes)
                self.metrics.reconcile_total.labels("error").inc()
                self._failed("reconcile.failed", exc)
                return
            # temporary, or refused by the database (a missing right), where no event announces the fix
            self._retry_after = self._retry_delay(exc)
            temporary = isinstance(exc, TemporaryError)
            self.metrics.reconcile_total.labels("retry" if temporary else "error").inc()
            self._failed("reconcile.retry" if temporary else "reconcile.failed", exc,
                         cause=exc.cause, retry_in=round(self._retry_after, 2))
            return
        finally:
            self.metrics.reconcile_duration.observe(time.monotonic() - started)
        self._succeeded(outcome, reason)
        self._start_background(badges)

    def _apply(self, conn: psycopg.Connection[Any], badges: tuple[Badge, ...]) -> Outcome:
        """One pass on the worker's connection (in its thread)."""
        # ``reconcile`` is looked up in this module at each pass: a test puts a failing one in its place
        return reconcile(conn, badges, self.options.settings, apply=True)

    def _retry_delay(self, exc: BadgedError) -> float:
        if exc.cause is Cause.LOCK_TIMEOUT:
            # each try waits up to lock_timeout with the app's writes queued behind it: space the tries out
            return self._lock_backoff.next_delay()
        return self._backoff.next_delay()

    def _crashed(self, exc: Exception) -> None:
        """An unexpected exception ended the pass: report it, stay alive, retry with backoff."""
        self._retry_after = delay = self._backoff.next_delay()
        self._last_ok = False
        self.metrics.reconcile_total.labels("error").inc()
        self.metrics.task_failures.labels("reconcile").inc()
        log.error("daemon.crashed", error=describe_error(exc), retry_in=round(delay, 2), exc_info=exc)
        self.health.set(False, f"the reconcile pass failed unexpectedly ({describe_error(exc)}); "
                               f"retrying in {delay:.1f} s")

    def _failed(self, event: str, exc: BadgedError, *, metric_reason: str | None = None, **extra: Any) -> None:
        self._last_ok = False
        if metric_reason:
            self.metrics.source_errors.labels(metric_reason).inc()
        errors = exc.lines() if isinstance(exc, SpecError) else [str(exc)]
        # /readyz first: whoever reads the log event then finds it already recorded
        self.health.set(False, errors[0] if len(errors) == 1 else f"{errors[0]} (+{len(errors) - 1} more)")
        log_method = log.warning if isinstance(exc, TemporaryError) else log.error
        log_method(event, errors=errors, source=self.source.description, **extra)

    def _succeeded(self, outcome: Outcome, reason: Wake) -> None:
        self._last_ok = True
        self._backoff.reset()
        self._lock_backoff.reset()
        self.metrics.reconcile_total.labels("changed" if outcome.applied else "in_sync").inc()
        for step in outcome.plan.steps:
            self.metrics.changes_applied.labels(step.action.value, step.kind).inc()
            if step.cause.repairs:
                self.metrics.drift_repaired.inc()
        self.metrics.last_success.set(time.time())
        self.health.set(True, f"in sync with {self.source.description} ({outcome.badges} badges)")
        if reason is not Wake.RESYNC or outcome.applied:
            log.debug("daemon.pass", reason=reason, applied=outcome.applied)

    # -- background tasks, started after the first success (badged's tables exist then) ---------

    def _start_background(self, badges: tuple[Badge, ...]) -> None:
        self._badges = badges
        for spec in self.options.sinks:
            if spec.name not in self._sinks:
                self._sinks.start(spec)
                # restarted: its position lives in the consumer group; the batch in hand is sent again
                self._supervisor.supervise(spec.name, functools.partial(self._sinks.failure, spec.name),
                                           functools.partial(self._sinks.start, spec))
        if self._recheck is None:
            self._restart_recheck()  # with self._badges, set above
            # restarted: every pass reads the recheck table anew
            self._supervisor.supervise("recheck", lambda: self._recheck.failure if self._recheck else None,
                                       self._restart_recheck)
        else:
            self._recheck.use(badges)

    def _restart_recheck(self) -> None:
        options = self.options
        self._recheck = _Recheck(lambda: connect(options.dsn, options.settings), options.settings,
                                 options.recheck_seconds, on_drained=self._record_recheck)
        self._recheck.use(self._badges)
        self._recheck.start()

    def _restart_http(self) -> None:
        if self._server is not None:
            self._server = self._server.restarted()
            self._server.start()

    def _restart_watch(self) -> None:
        self._watcher = asyncio.create_task(self._watch(), name="badged-watch")
        self._wake.set()  # changes may have been missed meanwhile: read the source again

    def _watch_failure(self) -> BaseException | None:
        task = self._watcher
        if task is None or not task.done() or self._stop.is_set() or task.cancelled():
            return None
        return task.exception() or RuntimeError(f"the watch of {self.source.description} ended")

    def _record_recheck(self, drained: Drained) -> None:
        for result, count in drained.counts.items():
            if count:
                self.metrics.rechecks.labels(result.value).inc(count)
        self.metrics.rechecks_pending.set(drained.left)
        self.metrics.recheck_oldest.set(drained.oldest or 0.0)


def run_daemon(source: Source, options: DaemonOptions) -> int:
    return asyncio.run(Daemon(source, options).run())
