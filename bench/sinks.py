"""Sink figures: awards/s ``badged run``'s forwarder delivers from a backlog, to a webhook and to NATS.

    python -m bench.sinks [--awards 10000]   (or as part of python -m bench)

A backlog of awards is made while nobody forwards; then one ``Forwarder`` (as ``badged run``
runs it: a consumer group, batches of 100, one event at a time, the position saved per batch)
delivers it in this process:

* webhook: to an asyncio HTTP receiver on the same event loop answering 200 (``bench.webhook_sink``
  compares receivers; this one costs least), over the sink's one keep-alive connection;
* NATS: to a JetStream stream on 127.0.0.1:4222, each publish acknowledged (skipped when no server
  answers; ``bench.nats_sink`` measures the sink alone, and with many acks in flight).

Each line also checks the count: every award arrived once (the receiver's count, the stream's).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from badged.forwarder import Forwarder
from badged.listen import Subscription
from badged.sinks import Sink
from badged.sinks.nats import NatsSink
from badged.sinks.webhook import WebhookSink, new_secret
from bench.common import SCALES, Row, Scale, embedded_server, progress, table_text, welcome_database
from bench.webhook_sink import _asyncio_receiver

NATS = ("127.0.0.1", 4222)
#: The most awards a line sends (the webhook sink does ~1,000/s on 2 cores: a bigger backlog only waits).
MOST_AWARDS = 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--awards", type=int, default=MOST_AWARDS)
    args = parser.parse_args()
    with embedded_server() as admin_dsn, tempfile.TemporaryDirectory(prefix="badged-bench-") as workdir:
        print(table_text(measure(admin_dsn, SCALES["full"], Path(workdir), awards=args.awards)))
    return 0


def measure(admin_dsn: str, scale: Scale, workdir: Path, awards: int | None = None) -> list[Row]:
    count = awards or min(scale.backlog, MOST_AWARDS)
    dsn = welcome_database(admin_dsn, "bench_sinks", workdir)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO signup SELECT generate_series(1, %s)", (count,))
    progress(f"webhook sink, {count} awards")
    webhook_rate, received = asyncio.run(_webhook(dsn, count))
    rows = [Row(f"webhook sink: {count:,} awards forwarded from a backlog, {received:,} got a 200 (awards/s)",
                "", f"{webhook_rate:,.0f}", "", "≥ 500", webhook_rate >= 500 and received == count)]
    if not _nats_answers():
        return [*rows, Row("NATS sink: no server on 127.0.0.1:4222", "", "", "", "report", None)]
    progress(f"NATS sink, {count} awards")
    nats_rate, stored = asyncio.run(_nats(dsn, count))
    return [*rows, Row(f"NATS sink: {count:,} awards forwarded from a backlog, {stored:,} in the stream (awards/s)",
                       "", f"{nats_rate:,.0f}", "", "≥ 1,000", nats_rate >= 1000 and stored == count)]


async def _forward(dsn: str, sink: Sink, group: str, count: int) -> float:
    """Seconds one forwarder takes to deliver the *count* awards of the backlog, from group *group*."""
    forwarder = Forwarder(Subscription(dsn, group=group, since=0, batch_size=100), sink)
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            row = await (await conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = %s",
                                            (group,))).fetchone()
            if row and row[0] >= count:
                break
            if task.done():
                task.result()
                raise SystemExit(f"the {group} forwarder ended early")
            await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    forwarder.close()
    await asyncio.wait_for(task, 10)
    return seconds


async def _webhook(dsn: str, count: int) -> tuple[float, int]:
    async with _asyncio_receiver() as port:
        sink = WebhookSink(f"http://127.0.0.1:{port}/hooks", new_secret())
        seconds = await _forward(dsn, sink, "bench_webhook", count)
    with psycopg.connect(dsn) as conn:  # the group counts the events that got a 200
        row = conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = 'bench_webhook'").fetchone()
    return count / seconds, int(row[0]) if row else 0


async def _nats(dsn: str, count: int) -> tuple[float, int]:
    import nats

    stream = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    sink = NatsSink.from_url(f"nats://127.0.0.1:4222/bench.{stream.lower()}?stream={stream}")
    try:
        seconds = await _forward(dsn, sink, "bench_nats", count)
    finally:
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            stored = int((await nc.jetstream().stream_info(stream)).state.messages)
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
    return count / seconds, stored


def _nats_answers() -> bool:
    try:
        with socket.create_connection(NATS, timeout=1) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
