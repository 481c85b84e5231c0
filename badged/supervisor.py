"""Supervision of the daemon's background tasks: one that dies is reported, and started again with backoff.

Each task is known by a name and two callables: one that says what ended it (None while it runs) and one
that starts a new one in its place. A task that dies makes /readyz fail naming it, is counted in
``badged_task_failures_total{task}`` (``badged_task_up{task}`` drops to 0), and is restarted after a
backoff of its own; one that ran for TASK_HEALTHY_S before dying starts that backoff afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from badged.backoff import Backoff
from badged.errors import describe_error
from badged.health import Health
from badged.logs import get_logger
from badged.metrics import Metrics

# the daemon's logger: these events came from it before supervision had a module of its own, and whoever
# filters on it keeps seeing them
log = get_logger("badged.daemon")

#: How often the supervisor looks at the background tasks.
SUPERVISE_INTERVAL_S = 0.25
#: A task that ran this long before dying starts its restart backoff afresh.
TASK_HEALTHY_S = 60.0


@dataclass
class SupervisedTask:
    """A background task of the daemon, which the supervisor starts again when it dies."""

    name: str
    #: what ended it (an exception), or None while it runs
    failure: Callable[[], BaseException | None]
    #: start a new one in its place
    restart: Callable[[], None]
    backoff: Backoff = field(default_factory=Backoff)
    started: float = field(default_factory=time.monotonic)
    died: BaseException | None = None
    restart_at: float = 0.0


class Supervisor:
    """Looks at the supervised tasks every SUPERVISE_INTERVAL_S until *stop* is set; restarts none after."""

    def __init__(self, health: Health, metrics: Metrics, stop: asyncio.Event) -> None:
        self._health = health
        self._metrics = metrics
        self._stop = stop
        self._tasks: dict[str, SupervisedTask] = {}

    def supervise(self, name: str, failure: Callable[[], BaseException | None], restart: Callable[[], None]) -> None:
        """Watch the task *name* (already started): *failure* says what ended it, *restart* starts it again."""
        task = self._tasks[name] = SupervisedTask(name, failure, restart)
        self._metrics.task_up.labels(name).set(1)
        self._health.add_check(name, lambda: (f"the {name} task died ({describe_error(task.died)}); restarting"
                                              if task.died is not None else None))

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as exc:  # the supervisor itself must not die
                log.error("daemon.supervisor_failed", error=describe_error(exc), exc_info=exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SUPERVISE_INTERVAL_S)

    def check(self) -> None:
        """Note the tasks that died since the last look; restart those whose backoff is over."""
        now = time.monotonic()
        for task in list(self._tasks.values()):
            if task.died is None:
                failure = task.failure()
                if failure is None:
                    continue
                if now - task.started > TASK_HEALTHY_S:
                    task.backoff.reset()
                delay = task.backoff.next_delay()
                task.died, task.restart_at = failure, now + delay
                self._metrics.task_failures.labels(task.name).inc()
                self._metrics.task_up.labels(task.name).set(0)
                log.error("task.died", task=task.name, error=describe_error(failure), retry_in=round(delay, 2),
                          exc_info=failure)
            elif now >= task.restart_at and not self._stop.is_set():
                try:
                    task.restart()
                except Exception as exc:
                    # it stays dead, and /readyz keeps naming it: try again after the next backoff
                    delay = task.backoff.next_delay()
                    task.died, task.restart_at = exc, now + delay
                    log.error("task.restart_failed", task=task.name, error=describe_error(exc),
                              retry_in=round(delay, 2))
                    continue
                task.died, task.started = None, now
                self._metrics.task_up.labels(task.name).set(1)
                log.info("task.restarted", task=task.name)
