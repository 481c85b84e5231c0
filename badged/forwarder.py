"""Run a sink from a subscription: every award delivered or parked, at least once, in order.

The forwarder reads events from a ``Subscription`` (with a group, its position lives in
the database and advances only when every event of a batch got a verdict) and hands
each to a sink (``badged.sinks``):

* delivered: counted, its lag (award → delivery) observed, next event;
* retry: the same event again after a backoff (full jitter, capped at 30 s) or the
  ``Retry-After`` the destination asked for (up to ``MAX_RETRY_AFTER_S``); no new
  event is sent meanwhile, so a receiver sees new awards in order;
* park: kept in ``parked_event`` (see ``parking``) with the answer, logged, counted,
  and delivery goes on with the next event.

Next to it (with a group, for sinks that may park), a replay loop sends again what
``badged events replay`` marked for this group, between new events: the sink only ever
has one event in hand. Each loop keeps its own connection for ``parked_event``.
``badged run`` runs one forwarder per sink as an asyncio task (supervised: one that
dies is started again); ``badged listen`` runs one with the JSON-lines sink;
``await badged.forward(dsn, sink, group=...)`` is the same from Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg

from badged.backoff import Backoff
from badged.db import connect_async
from badged.db_errors import temporary_or_raise
from badged.errors import BadgedError
from badged.events import AwardEvent
from badged.listen import Subscription
from badged.logs import get_logger
from badged.metrics import Metrics
from badged.parking import ParkingStatements
from badged.settings import Settings
from badged.sinks import Delivery, Sink, Verdict

log = get_logger("badged.forwarder")

#: The longest wait a destination's Retry-After is honoured with (a typo'd "86400" must not stall a day).
MAX_RETRY_AFTER_S = 900.0
#: How often the replay loop looks for events ``badged events replay`` marked.
REPLAY_INTERVAL_S = 5.0
#: Replayed events sent per look.
REPLAY_BATCH = 100


class Forwarder:
    """One sink fed by one subscription; ``run()`` until cancelled or the subscription is closed."""

    def __init__(self, subscription: Subscription, sink: Sink, metrics: Metrics | None = None, *,
                 replay: bool = True, replay_interval: float = REPLAY_INTERVAL_S) -> None:
        """*replay*: also send what ``badged events replay`` marked (needs a group, and rights on parked_event)."""
        self.subscription = subscription
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.replay = replay and subscription.group is not None
        self.replay_interval = replay_interval
        self._parking = ParkingStatements(subscription.settings)
        #: one connection to parked_event per loop (follow, replay), opened when first needed
        self._conns: dict[str, psycopg.AsyncConnection[Any]] = {}
        #: the sink has one event in hand at a time, whichever loop sends it
        self._sending = asyncio.Lock()
        kind = sink.kind  # the labelled series, looked up once: this is the path of every event
        self._lag = self.metrics.delivery_lag.labels(kind)
        self._delivered = self.metrics.events_delivered.labels(kind)
        self._failed = self.metrics.event_failures.labels(kind)

    def close(self) -> None:
        """Stop after the batch in hand (its position is saved once every event got a verdict); safe from any
        thread. Cancel the task running ``run()`` to stop at once (the batch is rolled back, sent again later)."""
        self.subscription.close()

    async def run(self) -> None:
        """Deliver until closed or cancelled; raise what ends it (a permanent error, a sink's bug)."""
        try:
            async with self.sink:
                log.info("sink.started", sink=self.sink.kind, destination=self.sink.description,
                         group=self.subscription.group)
                await self._follow_and_replay()
        finally:
            for loop in list(self._conns):
                await self._close_parking(loop)

    async def _follow_and_replay(self) -> None:
        follow = asyncio.create_task(self._follow(), name=f"badged-{self.sink.kind}-follow")
        tasks = {follow}
        if self.replay:
            tasks.add(asyncio.create_task(self._replay_loop(), name=f"badged-{self.sink.kind}-replay"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self) -> None:
        async with self.subscription as events:
            async for event in events:
                delivery = await self._deliver(event)
                if delivery.verdict is Verdict.PARK:
                    await self._park("follow", event.award_id, delivery)

    async def _deliver(self, event: AwardEvent) -> Delivery:
        """Send *event* until it is delivered or parked; counts and logs each outcome."""
        backoff: Backoff | None = None  # made on the first retry: seeding its Random costs ~10 µs per event
        while True:
            async with self._sending:
                delivery = await self.sink.send(event)
            if delivery.verdict is not Verdict.RETRY:
                self._lag.observe(max(0.0, time.time() - event.awarded_at.timestamp()))
                if delivery.verdict is Verdict.DELIVERED:
                    self._delivered.inc()
                return delivery
            self._failed.inc()
            backoff = backoff or Backoff()
            delay = backoff.next_delay()
            if delivery.retry_after is not None:
                delay = max(delay, min(delivery.retry_after, MAX_RETRY_AFTER_S))
            log.warning("sink.retry", sink=self.sink.kind, award_id=event.award_id, reason=delivery.reason,
                        status=delivery.status, retry_in=round(delay, 2))
            await asyncio.sleep(delay)

    async def _park(self, loop: str, award_id: int, delivery: Delivery) -> None:
        self.metrics.events_parked.labels(self.sink.kind).inc()
        group = self.subscription.group
        log.warning("sink.parked", sink=self.sink.kind, award_id=award_id, group=group, status=delivery.status,
                    reason=delivery.reason)
        if group is None:
            return  # nowhere durable to keep it: a listener without a group keeps nothing
        conn = await self._parking_connection(loop)
        await conn.execute(*self._parking.park(group, self.sink.kind, award_id, delivery))

    async def _replay_loop(self) -> None:
        """Every replay_interval, send what ``badged events replay`` marked; database errors only delay it."""
        backoff = Backoff()
        while True:
            try:
                await self._replay_due()
                backoff.reset()
                delay = self.replay_interval
            except (psycopg.Error, BadgedError) as exc:
                error = temporary_or_raise(exc, "read parked events")
                await self._close_parking("replay")
                delay = backoff.next_delay()
                log.warning("sink.replay_failed", sink=self.sink.kind, error=str(error), retry_in=round(delay, 2))
            await asyncio.sleep(delay)

    async def _replay_due(self) -> None:
        group = self.subscription.group
        if group is None:  # replay is only turned on with a group (__init__)
            return
        conn = await self._parking_connection("replay")
        exists = await (await conn.execute(*self._parking.table_exists())).fetchone()
        if not exists or not exists[0]:
            return  # a database reconciled by an older badged: the next reconcile creates it
        rows = await (await conn.execute(*self._parking.replays_due(group, REPLAY_BATCH))).fetchall()
        for award_id, event in self._parking.read_replays(rows):
            if event is None:
                log.warning("sink.replay_gone", sink=self.sink.kind, award_id=award_id, group=group)
                await conn.execute(*self._parking.unpark(group, award_id))
                continue
            delivery = await self._deliver(event)
            if delivery.verdict is Verdict.DELIVERED:
                log.info("sink.replayed", sink=self.sink.kind, award_id=award_id, group=group)
                await conn.execute(*self._parking.unpark(group, award_id))
            else:
                await self._park("replay", award_id, delivery)

    async def _parking_connection(self, loop: str) -> psycopg.AsyncConnection[Any]:
        conn = self._conns.get(loop)
        if conn is None or conn.closed:
            conn = self._conns[loop] = await connect_async(self.subscription.dsn, self.subscription.settings)
        return conn

    async def _close_parking(self, loop: str) -> None:
        conn = self._conns.pop(loop, None)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


async def forward(dsn: str, sink: Sink, *, group: str, settings: Settings | None = None,
                  metrics: Metrics | None = None, batch_size: int = 100) -> None:
    """Deliver every award to *sink* from consumer group *group*, until the calling task is cancelled.

    At least once: the group's position advances only after each event of a batch is delivered or parked,
    so a crash re-sends the batch in hand (the sinks' idempotency keys make that harmless).
    """
    subscription = Subscription(dsn, group=group, settings=settings, batch_size=batch_size)
    await Forwarder(subscription, sink, metrics).run()
