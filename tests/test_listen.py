"""badge-earned events with nothing lost: ``badged listen`` and ``badged.subscribe``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

import badged
from badged.errors import PermanentError
from tests.conftest import SEED_BADGES
from tests.daemon_process import Listener
from tests.helpers import apply, badge, capture_logs

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


# -- the async iterator is at-least-once, cancellable and closable (issue 12 items 1, 2) --------------


class Crash(Exception):
    """The application failed while handling an event."""


async def _crash_on_second_async(dsn: str) -> list[str]:
    handled: list[str] = []
    with contextlib.suppress(Crash):
        async with badged.subscribe(dsn, group="mailer", batch_size=3, poll_interval=0.2) as events:
            async for event in events:
                if handled:
                    await asyncio.sleep(0.5)  # still sending the second e-mail when the process dies
                    raise Crash
                handled.append(event.user_id)
    return handled


def _crash_on_second_sync(dsn: str) -> list[str]:
    handled: list[str] = []
    with contextlib.suppress(Crash), badged.subscribe(dsn, group="mailer", batch_size=3, poll_interval=0.2) as events:
        for event in events:
            if handled:
                time.sleep(0.5)
                raise Crash
            handled.append(event.user_id)
    return handled


@pytest.mark.parametrize("style", ["async", "sync"])
def test_a_crash_while_handling_an_event_hands_the_unfinished_batch_out_again(seeded: str, style: str) -> None:
    """The group's position is saved only once the application handled the batch's last event."""
    _create_group(seeded, "mailer")
    sign_up(seeded, 1, 3)
    crash = (lambda: asyncio.run(asyncio.wait_for(_crash_on_second_async(seeded), 20))) if style == "async" else None
    handled = crash() if crash else _crash_on_second_sync(seeded)
    assert handled == ["1"]

    async def rest() -> list[str]:
        users: list[str] = []
        async with badged.subscribe(seeded, group="mailer", poll_interval=0.2) as events:
            async for event in events:
                users.append(event.user_id)
                if len(users) == 3:
                    break
        return users

    assert asyncio.run(asyncio.wait_for(rest(), 20)) == ["1", "2", "3"], "the unfinished batch comes again"


def _create_group(dsn: str, group: str) -> None:
    """Start *group* now, as its first subscription does."""
    subscription = badged.subscribe(dsn, group=group, poll_interval=0.1)
    threading.Timer(1.0, subscription.close).start()
    assert list(subscription) == []


def test_a_clean_async_stop_saves_the_position_of_what_was_handled(seeded: str) -> None:
    _create_group(seeded, "feed")
    sign_up(seeded, 1, 4)

    async def take(count: int) -> list[str]:
        users: list[str] = []
        async with badged.subscribe(seeded, group="feed", batch_size=2, poll_interval=0.2) as events:
            async for event in events:
                users.append(event.user_id)
                if len(users) == count:
                    break
        return users

    def run(count: int) -> list[str]:
        return asyncio.run(asyncio.wait_for(take(count), 20))

    assert run(2) == ["1", "2"]
    assert run(2) == ["1", "2"], "break before asking for the 3rd: the batch was not finished"
    assert run(3) == ["1", "2", "3"]
    assert run(2) == ["3", "4"], "the first batch (1, 2) was finished and saved"


CANCEL_SCRIPT = """
import asyncio, sys, badged

async def consume():
    async for event in badged.subscribe(sys.argv[1], group="ui", poll_interval=5):
        pass

async def main():
    task = asyncio.create_task(consume())
    await asyncio.sleep(1.5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("cancelled")

asyncio.run(main())
print("exited")
"""


def test_cancelling_async_for_ends_asyncio_run_at_once(seeded: str) -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CANCEL_SCRIPT, seeded], capture_output=True, text=True,
                          timeout=30, check=True)
    assert done.stdout.split() == ["cancelled", "exited"]
    assert time.monotonic() - started < 15


def test_options_are_keyword_only_and_checked(seeded: str) -> None:
    with pytest.raises(TypeError):
        badged.subscribe(seeded, "mailer")  # type: ignore[misc]
    with pytest.raises(TypeError):
        badged.subscribe(seeded, colour="blue")  # type: ignore[call-arg]


# -- the LISTEN probe keeps off the public channel (issue 12 item 6) ---------------------------------


def test_the_listen_probe_never_writes_on_the_public_channel(seeded: str) -> None:
    with psycopg.connect(seeded, autocommit=True) as third_party:
        third_party.execute("LISTEN badge_earned")
        sign_up(seeded, 1)
        for style in ("sync", "async"):
            if style == "sync":
                with badged.subscribe(seeded, since=0) as events:
                    assert next(iter(events)).user_id == "1"
            else:
                async def first() -> str:
                    async with badged.subscribe(seeded, since=0) as events:
                        async for event in events:
                            return event.user_id
                    return ""

                assert asyncio.run(first()) == "1"
        payloads = [note.payload for note in third_party.notifies(timeout=1)]
    assert payloads, "the award's own NOTIFY is heard"
    for payload in payloads:
        json.loads(payload)  # every payload on the public channel is JSON, as documented


def test_leaving_async_with_mid_batch_frees_the_group_at_once(seeded: str) -> None:
    """Closing the outer async generator must close the inner ones: the batch's transaction ends there."""
    _create_group(seeded, "feed")
    sign_up(seeded, 1, 3)

    async def take_one() -> str:
        async with badged.subscribe(seeded, group="feed", batch_size=3, poll_interval=0.2) as events:
            async for event in events:
                return event.user_id
        return ""

    with capture_logs("psycopg") as psycopg_logs:
        assert asyncio.run(asyncio.wait_for(take_one(), 20)) == "1"
        gc.collect()  # an inner generator left open would be finalised here, on a closed connection
    warnings = [e for e in psycopg_logs.events if e["level"] != "debug"]
    assert warnings == [], "every generator was closed in order (no 'error ignored in rollback')"
    with psycopg.connect(seeded) as conn:
        conn.execute("SELECT 1 FROM badged.consumer_group WHERE name = 'feed' FOR UPDATE NOWAIT")  # not locked
        idle = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND application_name = 'badged' AND state = 'idle in transaction'").fetchone()
    assert idle == (0,)


def test_aclose_from_another_task_ends_the_iteration(seeded: str) -> None:
    async def scenario() -> list[str]:
        subscription = badged.subscribe(seeded, since=0, poll_interval=5)
        seen: list[str] = []

        async def consume() -> None:
            async for event in subscription:
                seen.append(event.user_id)

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.0)  # waiting for the doorbell inside the generator
        await subscription.aclose()
        await asyncio.wait_for(task, 5)
        return seen

    assert asyncio.run(scenario()) == []


def test_sigterm_while_connecting_ends_listen_at_once(tmp_path: Any) -> None:
    """A server that accepts and never answers: `badged listen` used to wait out connect_timeout (10 s)."""
    import socket

    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        listener = subprocess.Popen([sys.executable, "-m", "badged", "listen", "--dsn",
                                     f"postgresql://nobody@127.0.0.1:{port}/x", "--log-format", "json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        listener.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert listener.wait(timeout=8) == 0
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_listen_with_a_group_needs_only_the_readers_rights(seeded: str, admin_dsn: str) -> None:
    """README, Security: USAGE, SELECT on award/badge, INSERT/UPDATE on consumer_group; nothing on parked_event."""
    from psycopg import conninfo, sql

    role = f"badged_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
    try:
        with psycopg.connect(seeded, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA badged TO {r}; GRANT SELECT ON badged.award, badged.badge"
                                 " TO {r}; GRANT SELECT, INSERT, UPDATE ON badged.consumer_group TO {r}")
                         .format(r=sql.Identifier(role)))
        reader = conninfo.make_conninfo(seeded, user=role)
        _create_group(reader, "reader")
        sign_up(seeded, 5)
        listener = subprocess.Popen([sys.executable, "-m", "badged", "listen", "--dsn", reader, "--group", "reader",
                                     "--log-format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        try:
            assert listener.stdout is not None
            line = listener.stdout.readline()
            if not line:
                listener.kill()
                raise AssertionError(listener.communicate()[1])
            assert json.loads(line)["user_id"] == "5"
            listener.send_signal(signal.SIGTERM)
            assert listener.wait(timeout=10) == 0
        finally:
            listener.kill()
            listener.wait()
    finally:
        with psycopg.connect(seeded, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
