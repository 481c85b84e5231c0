"""``badged run --sink nats://…``: every award in the JetStream stream exactly once, across a crash.

Needs the NATS server with JetStream on 127.0.0.1:4222 (skipped with the reason otherwise). The sink's
own behaviour (URL, stream creation, classification) is tested in ``test_nats_sink``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.daemon_process import DaemonProcess
from tests.helpers import badge

NATS = ("127.0.0.1", 4222)
AWARDS = 10_000


def _nats_answers() -> bool:
    try:
        with socket.create_connection(NATS, timeout=1) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _nats_answers(), reason="no NATS server answers on 127.0.0.1:4222 (JetStream needed)"),
]


async def _stream_messages(stream: str) -> int:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


async def _award_ids(stream: str, subject: str) -> list[int]:
    """Every message of *stream*, read with an ephemeral pull consumer, as award ids."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        js = nc.jetstream()
        pull = await js.pull_subscribe(subject, durable=None, stream=stream)
        ids: list[int] = []
        while True:
            try:
                batch = await pull.fetch(1000, timeout=2)
            except NatsTimeout:
                return ids
            for message in batch:
                assert message.headers and message.headers["Nats-Msg-Id"] == \
                    f"badged-award-{json.loads(message.data)['award_id']}"
                ids.append(json.loads(message.data)["award_id"])
                await message.ack()
    finally:
        await nc.close()


async def _delete_stream(stream: str) -> None:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:  # never created: nothing to clean
        pass
    finally:
        await nc.close()


@pytest.fixture
def stream() -> Iterator[tuple[str, str]]:
    name = f"BADGED_TEST_{uuid.uuid4().hex[:12].upper()}"
    subject = f"badged.test.{name.lower()}"
    yield name, subject
    asyncio.run(_delete_stream(name))


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout} s")


def test_every_award_reaches_the_stream_exactly_once_across_a_crash(dsn: str, tmp_path: Path,
                                                                    stream: tuple[str, str]) -> None:
    name, subject = stream
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    badges = tmp_path / "badge.json"
    badges.write_text(json.dumps([badge("welcome", "true", table="signup", name="Welcome")]))
    args = ("--badges", str(badges), "--dsn", dsn, "--http", "", "--sink",
            f"nats://127.0.0.1:4222/{subject}?stream={name}")

    first = DaemonProcess(*args)
    try:
        first.wait_event("listen.started", group="nats", timeout=20)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for start in range(1, AWARDS + 1, 1000):  # ten transactions
                conn.execute("INSERT INTO signup SELECT generate_series(%s::int, %s::int)", (start, start + 999))
        _wait(lambda: asyncio.run(_stream_messages(name)) >= 1500, 30, "the first 1,500 messages")
    finally:
        first.kill()  # SIGKILL mid-stream: the batch in hand was published but its position not saved
    published_before_restart = asyncio.run(_stream_messages(name))
    assert published_before_restart < AWARDS, "killed mid-stream (raise AWARDS if the machine got faster)"

    second = DaemonProcess(*args)
    try:
        _wait(lambda: asyncio.run(_stream_messages(name)) >= AWARDS, 60, f"{AWARDS} messages")
        with psycopg.connect(dsn) as conn:
            _wait(lambda: conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = 'nats'"
                                       ).fetchone() == (AWARDS,), 30, "the group's position at the end")
        assert second.terminate() == 0
    finally:
        second.kill()
    ids = asyncio.run(_award_ids(name, subject))
    with psycopg.connect(dsn) as conn:
        awarded = [row[0] for row in conn.execute("SELECT id FROM badged.award ORDER BY id")]
    assert len(awarded) == AWARDS
    assert sorted(ids) == awarded, "every award in the stream, exactly once"
