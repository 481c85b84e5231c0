"""badge-earned events with nothing lost: ``badged listen`` and ``badged.subscribe``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

import badged
from badged.errors import PermanentError
from tests.conftest import SEED_BADGES
from tests.daemon_process import Listener
from tests.helpers import apply, badge

EVENT_FIELDS = {"award_id", "badge", "badge_name", "user_id", "awarded_at", "table"}


@pytest.fixture
def seeded(dsn: str) -> str:
    """The seed's badges, plus an insert badge that every new user earns at once."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    apply(dsn, [*SEED_BADGES, badge("welcome", "true", table="signup", name="Welcome")])
    return dsn


def sign_up(dsn: str, first: int, count: int = 1) -> None:
    """Award 'welcome' to users first .. first+count-1, one transaction per statement."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO signup SELECT generate_series(%s::int, %s::int)", (first, first + count - 1))


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        if listener.process.poll() is None:
            listener.process.kill()
            listener.process.wait()
        listener.close()


def listen(listeners: list[Listener], dsn: str, *args: str) -> Listener:
    listener = Listener(dsn, *args)
    listeners.append(listener)
    return listener


def test_an_award_prints_one_line_with_exactly_the_event_fields(seeded: str, listeners: list[Listener]) -> None:
    listener = listen(listeners, seeded)
    listener.wait_started()
    sign_up(seeded, 42)
    (event,) = listener.wait_lines(1)
    assert set(event) == EVENT_FIELDS
    assert event["badge"] == "welcome" and event["badge_name"] == "Welcome"
    assert event["user_id"] == "42" and event["table"] == "public.signup"
    assert datetime.fromisoformat(event["awarded_at"]).tzinfo is not None
    assert isinstance(event["award_id"], int)
    assert listener.stop() == 0


def test_without_a_group_it_starts_from_now_or_since(seeded: str, listeners: list[Listener]) -> None:
    sign_up(seeded, 1, 3)
    listener = listen(listeners, seeded)
    listener.wait_started()
    sign_up(seeded, 10)
    assert [e["user_id"] for e in listener.wait_lines(1)] == ["10"]
    replay = listen(listeners, seeded, "--since", "1")
    assert [e["user_id"] for e in replay.wait_lines(3)] == ["2", "3", "10"]


def test_awards_made_while_no_one_listens_are_all_delivered_once(seeded: str, listeners: list[Listener]) -> None:
    first = listen(listeners, seeded, "--group", "mailer")
    first.wait_started()
    assert first.stop() == 0
    for start in range(1, 1001, 100):  # 1,000 awards in ten transactions, nobody listening
        sign_up(seeded, start, 100)
    listener = listen(listeners, seeded, "--group", "mailer", "--batch-size", "64")
    events = listener.wait_lines(1000)
    assert sorted(int(e["user_id"]) for e in events) == list(range(1, 1001))
    sign_up(seeded, 5000)
    assert listener.wait_lines(1001)[-1]["user_id"] == "5000"
    assert listener.stop() == 0


@pytest.mark.slow
def test_a_group_resumes_after_a_stop_mid_stream_with_nothing_lost_or_twice(seeded: str,
                                                                            listeners: list[Listener]) -> None:
    listen(listeners, seeded, "--group", "feed").wait_started()
    listeners[0].stop()
    sign_up(seeded, 1, 2000)
    seen: list[str] = []
    for _ in range(3):  # stop three times in the middle of the stream
        listener = listen(listeners, seeded, "--group", "feed", "--batch-size", "50")
        listener.wait_lines(1)
        assert listener.stop() == 0
        seen += [e["user_id"] for e in (json.loads(line) for line in listener.lines)]
    rest = listen(listeners, seeded, "--group", "feed", "--batch-size", "50")
    remaining = 2000 - len(seen)
    if remaining:
        rest.wait_lines(remaining)
    else:
        rest.wait_started()
    rest.stop()
    seen += [json.loads(line)["user_id"] for line in rest.lines]
    assert sorted(map(int, seen)) == list(range(1, 2001)), "each award exactly once across restarts"


@pytest.mark.slow
def test_a_killed_member_loses_nothing(seeded: str, listeners: list[Listener]) -> None:
    """SIGKILL mid-batch: at-least-once, so the batch in hand comes again, and nothing is lost."""
    listen(listeners, seeded, "--group", "audit").wait_started()
    listeners[0].stop()
    sign_up(seeded, 1, 500)
    victim = listen(listeners, seeded, "--group", "audit", "--batch-size", "100")
    victim.wait_lines(150)
    victim.stop(signal.SIGKILL)
    seen = {json.loads(line)["user_id"] for line in victim.lines}
    survivor = listen(listeners, seeded, "--group", "audit", "--batch-size", "100")
    survivor.wait_users({str(n) for n in range(1, 501)}, also=seen)
    survivor.stop()
    seen |= {json.loads(line)["user_id"] for line in survivor.lines}
    assert seen == {str(n) for n in range(1, 501)}
    duplicates = len(victim.lines) + len(survivor.lines) - 500
    assert duplicates <= 100, "at most the one batch that was in hand"


@pytest.mark.slow
def test_two_processes_in_one_group_each_get_every_award_once_between_them(seeded: str,
                                                                           listeners: list[Listener]) -> None:
    a = listen(listeners, seeded, "--group", "shared", "--batch-size", "20")
    b = listen(listeners, seeded, "--group", "shared", "--batch-size", "20")
    a.wait_started()
    b.wait_started()
    for start in range(1, 1001, 50):
        sign_up(seeded, start, 50)
    with a._changed:
        a._changed.wait_for(lambda: len(a.lines) + len(b.lines) >= 1000, 20)
    assert a.stop() == 0 and b.stop() == 0
    users = [json.loads(line)["user_id"] for line in a.lines + b.lines]
    assert sorted(map(int, users)) == list(range(1, 1001)), "no award lost, none delivered twice"


def test_awards_committing_out_of_id_order_are_not_skipped(seeded: str) -> None:
    """A transaction that took an earlier award id but commits later must still be delivered."""
    subscription = badged.subscribe(seeded, since=0, poll_interval=0.2)
    events = iter(subscription)
    with psycopg.connect(seeded) as slow, psycopg.connect(seeded) as fast:
        slow.execute("INSERT INTO signup VALUES (1)")  # takes the lower award id, stays open
        fast.execute("INSERT INTO signup VALUES (2)")
        fast.commit()
        first = next(events)
        slow.commit()
    second = next(events)
    subscription.close()
    assert (first.user_id, second.user_id) == ("2", "1")
    assert first.award_id > second.award_id


def test_the_python_api_iterates_sync_and_async(seeded: str) -> None:
    sign_up(seeded, 1, 3)
    subscription = badged.subscribe(seeded, since=0)
    got = [next(iter(subscription)).user_id]
    subscription.close()
    assert got == ["1"]

    async def consume() -> list[str]:
        users = []
        async for event in badged.subscribe(seeded, since=0, batch_size=2):
            users.append(event.user_id)
            if len(users) == 3:
                break
        return users

    assert asyncio.run(asyncio.wait_for(consume(), 20)) == ["1", "2", "3"]


def test_listening_before_any_reconcile_is_a_clear_error(dsn: str) -> None:
    with pytest.raises(PermanentError, match="run `badged reconcile --once`"):
        next(iter(badged.subscribe(dsn)))
    result = subprocess.run([sys.executable, "-m", "badged", "listen", "--dsn", dsn], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "badged: error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_database_restart_mid_stream_is_survived(restartable_server: Any, listeners: list[Listener]) -> None:
    server = restartable_server
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    apply(server.dsn, [badge("welcome", "true", table="signup")])
    listener = listen(listeners, server.dsn, "--group", "restart")
    listener.wait_started()
    sign_up(server.dsn, 1, 10)
    listener.wait_lines(10)
    server.stop()
    server.start()
    sign_up(server.dsn, 11, 10)
    events = listener.wait_lines(20, timeout=40)
    assert sorted(int(e["user_id"]) for e in events) == list(range(1, 21))
    assert any(log.get("event") == "listen.reconnect" for log in listener.logs)
    assert listener.stop() == 0


def test_json_lines_are_flushed_one_by_one(seeded: str, listeners: list[Listener]) -> None:
    listener = listen(listeners, seeded)
    listener.wait_started()
    for user in (1, 2):
        sign_up(seeded, user)
        assert listener.wait_lines(user)[-1]["user_id"] == str(user)


def test_os_environ_is_untouched() -> None:
    assert "BADGED_GROUP" not in os.environ
