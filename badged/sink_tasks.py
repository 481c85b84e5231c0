"""The daemon's sinks: one forwarder per sink, each an asyncio task reading its own consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from badged.forwarder import Forwarder
from badged.listen import Subscription
from badged.metrics import Metrics
from badged.settings import Settings
from badged.sinks import Sink

#: Awards a sink's forwarder reads per query (its batch: the position advances when all are delivered or parked).
SINK_BATCH = 100
#: On shutdown, how long the forwarders may finish the event in hand before they are cancelled.
SINK_STOP_GRACE_S = 0.5


@dataclass(frozen=True)
class SinkSpec:
    """A sink ``badged run`` feeds: its task's name (``webhook``, ``nats``), its consumer group, and how to make it."""

    name: str
    group: str
    make: Callable[[], Sink]


class SinkTasks:
    """Starts, reports and stops the forwarder of each sink of ``badged run``."""

    def __init__(self, dsn: str, settings: Settings, metrics: Metrics, *, stopping: Callable[[], bool]) -> None:
        self._dsn, self._settings = dsn, settings
        self._metrics = metrics
        self._stopping = stopping
        self._forwarders: dict[str, tuple[Forwarder, asyncio.Task[None]]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._forwarders

    def start(self, spec: SinkSpec) -> None:
        """A new forwarder for *spec* (its position lives in the group: the batch in hand is sent again)."""
        subscription = Subscription(self._dsn, group=spec.group, settings=self._settings, batch_size=SINK_BATCH)
        forwarder = Forwarder(subscription, spec.make(), self._metrics)
        task = asyncio.create_task(forwarder.run(), name=f"badged-sink-{spec.name}")
        self._forwarders[spec.name] = forwarder, task

    def failure(self, name: str) -> BaseException | None:
        """What ended sink *name*'s task, or None while it runs (or while the daemon stops)."""
        _forwarder, task = self._forwarders[name]
        if not task.done() or self._stopping():
            return None
        if task.cancelled():
            return RuntimeError(f"the {name} forwarder was cancelled")
        return task.exception() or RuntimeError(f"the {name} forwarder ended")

    async def stop(self) -> None:
        """Let each forwarder finish its batch for a moment (SINK_STOP_GRACE_S: then its position is saved), then
        cancel it: a batch left unfinished rolls back and is sent again by the next badged (the sinks' idempotency
        keys make that harmless)."""
        tasks = []
        for forwarder, task in self._forwarders.values():
            forwarder.close()
            tasks.append(task)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=SINK_STOP_GRACE_S)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=SINK_STOP_GRACE_S)
