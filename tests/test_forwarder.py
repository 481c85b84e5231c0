"""The forwarder between a subscription and a sink: verdicts, parking, replays, metrics, the Python API.

A scripted sink (in memory, no network) decides each verdict; the database is real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import psycopg
import pytest

import badged
from badged import forwarder as forwarder_module
from badged.events import AwardEvent
from badged.forwarder import Forwarder
from badged.listen import Subscription
from badged.metrics import Metrics
from badged.sinks import Delivery
from tests.helpers import welcome_on_signup

Script = Callable[[AwardEvent, int], Delivery]


class ScriptedSink:
    """Answers each send as *script* says (the event, how many times it was sent before)."""

    kind = "scripted"
    description = "a list in memory"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sent: list[tuple[str, float]] = []  # (user, when)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        return None

    async def send(self, event: AwardEvent) -> Delivery:
        before = sum(1 for user, _ in self.sent if user == event.user_id)
        self.sent.append((event.user_id, time.monotonic()))
        return self.script(event, before)

    def users(self) -> list[str]:
        return [user for user, _ in self.sent]


@pytest.fixture
def signup(dsn: str) -> str:
    return welcome_on_signup(dsn)


def sign_up(dsn: str, *users: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user in users:
            conn.execute("INSERT INTO signup VALUES (%s)", (user,))


async def run_until(forwarder: Forwarder, done: Callable[[], bool], timeout: float = 15.0) -> None:
    task = asyncio.create_task(forwarder.run())
    deadline = time.monotonic() + timeout
    while not done():
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "not done in time"
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def parked(dsn: str) -> list[tuple[str, int | None, str, int]]:
    with psycopg.connect(dsn) as conn:
        return [(str(r[0]), r[1], r[2], r[3]) for r in conn.execute(
            "SELECT a.user_id, p.status, p.reason, p.attempts FROM badged.parked_event p"
            " JOIN badged.award a ON a.id = p.award_id ORDER BY p.award_id")]


def test_a_parked_event_is_kept_counted_and_delivery_goes_on(signup: str) -> None:
    sign_up(signup, 1, 2, 3)
    sink = ScriptedSink(lambda event, _: Delivery.park("HTTP 410 Gone", status=410, response="gone")
                        if event.user_id == "2" else Delivery.delivered())
    metrics = Metrics()
    forwarder = Forwarder(Subscription(signup, group="g", since=0, poll_interval=0.2), sink, metrics)
    asyncio.run(run_until(forwarder, lambda: len(sink.sent) == 3))
    assert sink.users() == ["1", "2", "3"]
    assert parked(signup) == [("2", 410, "HTTP 410 Gone", 1)]
    assert metrics.events_parked.labels("scripted")._value.get() == 1
    assert metrics.events_delivered.labels("scripted")._value.get() == 2
    lag = {s.name: s.value for s in metrics.delivery_lag.collect()[0].samples if s.labels == {"sink": "scripted"}}
    assert lag["badged_event_delivery_lag_seconds_count"] == 3, "delivered and parked events are both observed"


def test_retry_after_is_honoured_up_to_its_cap(signup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarder_module, "MAX_RETRY_AFTER_S", 0.6)
    sign_up(signup, 1)
    sink = ScriptedSink(lambda _event, before: Delivery.retry("HTTP 429", status=429, retry_after=86400)
                        if before == 0 else Delivery.delivered())
    forwarder = Forwarder(Subscription(signup, group="g", since=0, poll_interval=0.2), sink, Metrics())
    asyncio.run(run_until(forwarder, lambda: len(sink.sent) == 2))
    waited = sink.sent[1][1] - sink.sent[0][1]
    assert 0.6 <= waited < 2.0, f"a day's Retry-After is capped (here at 0.6 s); waited {waited:.2f} s"


def test_a_replay_of_a_deleted_award_unparks_it_and_sends_nothing(signup: str) -> None:
    sign_up(signup, 1, 2)
    refuse = {"1", "2"}
    sink = ScriptedSink(lambda event, _: Delivery.park("HTTP 400", status=400) if event.user_id in refuse
                        else Delivery.delivered())
    forwarder = Forwarder(Subscription(signup, group="g", since=0, poll_interval=0.2), sink, Metrics(),
                          replay_interval=0.2)

    async def scenario() -> None:
        task = asyncio.create_task(forwarder.run())
        while len(parked(signup)) < 2:
            await asyncio.sleep(0.05)
        refuse.clear()
        with psycopg.connect(signup, autocommit=True) as conn:
            conn.execute("DELETE FROM badged.award WHERE user_id = '1'")
            conn.execute("UPDATE badged.parked_event SET replay_requested_at = now()")
        deadline = time.monotonic() + 10
        while parked(signup) or _rows(signup):
            assert time.monotonic() < deadline, parked(signup)
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert sink.users() == ["1", "2", "2"], "user 2 was replayed; user 1's award is gone: nothing sent"


def _rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM badged.parked_event").fetchone()
    return int(row[0]) if row else 0


def test_forward_runs_a_sink_from_a_group(signup: str) -> None:
    sink = ScriptedSink(lambda _event, _before: Delivery.delivered())

    async def scenario() -> None:
        task = asyncio.create_task(badged.forward(signup, sink, group="api", batch_size=2))
        await asyncio.sleep(1.0)  # the group starts when the forwarder first connects
        sign_up(signup, 1, 2, 3)
        deadline = time.monotonic() + 10
        while len(sink.sent) < 3:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert sink.users() == ["1", "2", "3"]
    with psycopg.connect(signup) as conn:
        delivered: Any = conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = 'api'").fetchone()
    assert delivered[0] >= 2, "the full batch's position was saved"
