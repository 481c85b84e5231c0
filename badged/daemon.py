"""``badged run``: keep the database reconciled with badge.json, forever.

A level-based control loop, in the manner of a Kubernetes controller:

* it wakes on a source change, on the resync timer (default 60 s, which also
  repairs drift made by hand), or on a retry after a temporary failure;
* it re-reads the whole badge.json and compares its hash (events are only hints);
* a *temporary* failure (database down, lock timeout) is retried with exponential
  backoff and full jitter, capped at 30 s: never a crash loop, never a spin;
* a *permanent* one (invalid badge.json, missing table) changes nothing, so the last
  good state stays applied, makes /readyz fail, and waits for the next change or
  resync;
* SIGTERM/SIGINT end it within 2 s: a reconcile in flight gets a moment to commit,
  then is cancelled (its transaction rolls back), and the process exits 0;
* after the first success, a thread finishes every second the badge checks that
  triggers deferred rather than wait on another transaction (``recheck``).

Reconciles run in a worker thread with one persistent connection; the event loop
only waits. Several replicas are safe: the advisory lock in ``reconcile`` makes one
apply while the others find nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import signal
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from badged.backoff import Backoff
from badged.db import connect, describe
from badged.errors import BadgedError, ConnectionFailed, PermanentError, SourceError, SpecError, TemporaryError
from badged.health import Health, HealthServer
from badged.metrics import Metrics
from badged.recheck import Drained, RecheckWorker
from badged.reconcile import Outcome, reconcile
from badged.settings import Settings
from badged.sources import Source
from badged.spec import Badge, parse_badges
from badged.webhook import WebhookForwarder, WebhookOptions

log = structlog.get_logger("badged.daemon")

#: How long a reconcile in flight may go on after SIGTERM before it is cancelled.
SHUTDOWN_GRACE_S = 1.0


@dataclass(frozen=True)
class DaemonOptions:
    dsn: str
    settings: Settings
    resync_seconds: float = 60.0
    allow_empty: bool = False
    http: str | None = ":8080"
    webhook: WebhookOptions | None = None
    #: how often to finish the badge checks triggers deferred (see ``recheck``)
    recheck_seconds: float = 1.0


class Daemon:
    def __init__(self, source: Source, options: DaemonOptions, metrics: Metrics | None = None) -> None:
        self.source = source
        self.options = options
        self.metrics = metrics or Metrics()
        self.health = Health()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._backoff = Backoff()
        self._retry_after: float | None = None
        self._last_digest: str | None = None
        self._parsed: tuple[str, tuple[Badge, ...]] | None = None
        self._last_ok = False
        self._conn: psycopg.Connection[Any] | None = None
        self._forwarder: WebhookForwarder | None = None
        self._recheck: RecheckWorker | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        server = HealthServer(self.options.http, self.health, self.metrics) if self.options.http else None
        if server:
            server.start()
        watcher = asyncio.create_task(self._watch(), name="badged-watch")
        log.info("daemon.started", source=self.source.description, dsn=describe(self.options.dsn),
                 resync_seconds=self.options.resync_seconds, schema=self.options.settings.schema,
                 prefix=self.options.settings.prefix)
        try:
            reason = "startup"
            while not self._stop.is_set():
                await self._pass(reason)
                reason = await self._sleep()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if self._forwarder:
                self._forwarder.stop(timeout=0.5)
            if self._recheck:
                self._recheck.stop(timeout=0.5)
            if server:
                server.stop()
            self._close()
            log.info("daemon.stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("daemon.stopping", signal=sig.name)
        self._stop.set()

    async def _watch(self) -> None:
        async for _ in self.source.changes(self._stop):
            self._wake.set()

    async def _sleep(self) -> str:
        """Wait for a change, the resync timer, a retry, or stop; say which."""
        if self._retry_after is not None:
            # A database that is failing is not helped by trying sooner: changes made meanwhile wait for
            # the retry, which reads the source anew (every event used to cut the backoff short).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._retry_after)
            self._wake.clear()
            return "stop" if self._stop.is_set() else "retry"
        # +-10 % so that replicas started together drift apart
        timeout, reason = self.options.resync_seconds * random.uniform(0.9, 1.1), "resync"  # noqa: S311
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())}
        _done, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        if self._stop.is_set():
            return "stop"
        if self._wake.is_set():
            self._wake.clear()
            return "change"
        return reason

    async def _pass(self, reason: str) -> None:
        """One level-based pass: read, validate, reconcile; record the outcome."""
        self._retry_after = None
        try:
            text = self.source.read()
        except SourceError as exc:
            self._failed("source.unreadable", exc, metric_reason="unreadable")
            return
        digest = hashlib.sha256(text.encode()).hexdigest()
        if reason == "change" and digest == self._last_digest and self._last_ok:
            return  # an event that did not change the content (another file, a touch)
        self._last_digest = digest
        if self._parsed is not None and self._parsed[0] == digest:
            badges = self._parsed[1]  # a resync of unchanged content: parsing 1,000 conditions costs ~1 s
        else:
            try:
                badges = parse_badges(text, source=self.source.description, prefix=self.options.settings.prefix,
                                      allow_empty=self.options.allow_empty)
            except SpecError as exc:
                self._failed("source.invalid", exc, metric_reason="invalid")
                return
            self._parsed = (digest, badges)
        self.metrics.badges_desired.set(len(badges))
        started = time.monotonic()
        try:
            outcome = await self._reconcile(badges)
        except TemporaryError as exc:
            self._retry_after = self._backoff.next_delay()
            self.metrics.reconcile_total.labels("retry").inc()
            self._failed("reconcile.retry", exc, retry_in=round(self._retry_after, 2))
            return
        except PermanentError as exc:
            self.metrics.reconcile_total.labels("error").inc()
            self._failed("reconcile.failed", exc)
            return
        finally:
            self.metrics.reconcile_duration.observe(time.monotonic() - started)
        self._succeeded(outcome, reason)
        self._recheck_with(badges)

    def _failed(self, event: str, exc: BadgedError, *, metric_reason: str | None = None, **extra: Any) -> None:
        self._last_ok = False
        if metric_reason:
            self.metrics.source_errors.labels(metric_reason).inc()
        errors = exc.lines() if isinstance(exc, SpecError) else [str(exc)]
        log_method = log.warning if isinstance(exc, TemporaryError) else log.error
        log_method(event, errors=errors, source=self.source.description, **extra)
        self.health.set(False, errors[0] if len(errors) == 1 else f"{errors[0]} (+{len(errors) - 1} more)")
        self.metrics.ready.set(0)

    def _succeeded(self, outcome: Outcome, reason: str) -> None:
        self._last_ok = True
        self._backoff.reset()
        self.metrics.reconcile_total.labels("changed" if outcome.applied else "in_sync").inc()
        for step in outcome.plan.steps:
            self.metrics.changes_applied.labels(step.action.value, step.kind).inc()
            if step.reason.startswith(("drifted", "missing")):
                self.metrics.drift_repaired.inc()
        self.metrics.last_success.set(time.time())
        self.metrics.ready.set(1)
        self.health.set(True, f"in sync with {self.source.description} ({outcome.badges} badges)")
        if self.options.webhook and self._forwarder is None:
            # after the first success, so badged's tables exist when it starts reading
            self._forwarder = WebhookForwarder(self.options.dsn, self.options.settings, self.options.webhook,
                                               self.metrics)
            self._forwarder.start()
        if reason != "resync" or outcome.applied:
            log.debug("daemon.pass", reason=reason, applied=outcome.applied)

    def _recheck_with(self, badges: tuple[Badge, ...]) -> None:
        """Finish deferred checks with the badges just reconciled (started after the first success)."""
        if self._recheck is None:
            options = self.options
            self._recheck = RecheckWorker(lambda: connect(options.dsn, options.settings), options.settings,
                                          options.recheck_seconds, on_drained=self._record_recheck)
            self._recheck.start()
        self._recheck.use(badges)

    def _record_recheck(self, drained: Drained) -> None:
        for result, count in drained.counts.items():
            if count:
                self.metrics.rechecks.labels(result.value).inc(count)
        self.metrics.rechecks_pending.set(drained.left)
        self.metrics.recheck_oldest.set(drained.oldest or 0.0)

    async def _reconcile(self, badges: tuple[Badge, ...]) -> Outcome:
        work = asyncio.ensure_future(asyncio.to_thread(self._reconcile_blocking, badges))
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not work.done():
            # Shutting down: let the transaction finish if it is about to, else cancel it
            # (PostgreSQL rolls it back) so we exit well within the 2 s budget.
            done, _ = await asyncio.wait({work}, timeout=SHUTDOWN_GRACE_S)
            if not done and self._conn is not None:
                self._conn.cancel_safe(timeout=0.5)
        return await work

    def _reconcile_blocking(self, badges: tuple[Badge, ...]) -> Outcome:
        settings = self.options.settings
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._close()
            self._conn = connect(self.options.dsn, settings)
        try:
            return reconcile(self._conn, badges, settings, apply=True)
        except ConnectionFailed:
            self._close()
            raise

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def run_daemon(source: Source, options: DaemonOptions) -> int:
    return asyncio.run(Daemon(source, options).run())
