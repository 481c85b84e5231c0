"""NATS sink throughput: events/s published to JetStream through one ``NatsSink``, each acknowledged.

    python -m bench.nats_sink [--events 10000] [--in-flight 256] [--server nats://127.0.0.1:4222]

Publishes hand-made AwardEvents (no PostgreSQL involved) to a stream of its own, which it deletes
afterwards, and measures:

* sequential: one ``send`` at a time, each waiting for its PubAck: the sink's contract, and what the
  forwarder does (the next event is sent only once the previous one is delivered or parked);
* pipelined: the same sink with ``--in-flight`` sends awaited together, for comparison only: how much
  a sink that kept many acks in flight could gain (it would have to give up the forwarder's ordering).

Both publish new award ids, so neither run meets JetStream's duplicate check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import nats

from badged.events import AwardEvent
from badged.sinks import Verdict
from badged.sinks.nats import NatsSink
from bench.common import Row, progress, table_text

DEFAULT_SERVER = os.environ.get("BADGED_BENCH_NATS", "nats://127.0.0.1:4222")
IN_FLIGHT = 256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="nats://HOST:PORT (env BADGED_BENCH_NATS)")
    args = parser.parse_args()
    print(table_text(rows(measure(args.events, args.in_flight, args.server))))
    return 0


def measure(events: int, in_flight: int = IN_FLIGHT, server: str = DEFAULT_SERVER) -> dict[str, float]:
    """Events/s for *events* events sent one acked event at a time, and with *in_flight* sends awaited together."""
    return asyncio.run(_measure(events, in_flight, server))


def rows(figures: dict[str, float]) -> list[Row]:
    events, in_flight = int(figures["events"]), int(figures["in_flight"])
    return [
        Row(f"NATS sink, {events:,} events, one acked at a time (events/s)", "", f"{figures['sequential_per_s']:,.0f}",
            "", "report", None),
        Row(f"NATS sink, {in_flight} acks in flight ÷ one at a time (events/s)", f"{figures['sequential_per_s']:,.0f}",
            f"{figures['pipelined_per_s']:,.0f}", f"{figures['pipelined_speedup']:.2f}", "report", None),
    ]


async def _measure(events: int, in_flight: int, server: str) -> dict[str, float]:
    token = uuid.uuid4().hex[:12]
    stream = f"BADGED_BENCH_{token}"
    url = f"{server}/badged_bench.{token}.earned?stream={stream}"
    async with NatsSink.from_url(url) as sink:  # creates the stream
        try:
            progress(f"nats sink: {events:,} events, one acked at a time")
            sequential = await _timed(sink, range(1, events + 1), 1)
            progress(f"nats sink: {events:,} events, {in_flight} in flight")
            pipelined = await _timed(sink, range(events + 1, 2 * events + 1), in_flight)
        finally:
            await _delete_stream(server, stream)
    return {"events": float(events), "in_flight": float(in_flight), "sequential_per_s": events / sequential,
            "pipelined_per_s": events / pipelined, "pipelined_speedup": sequential / pipelined}


async def _timed(sink: NatsSink, award_ids: range, in_flight: int) -> float:
    """Seconds to deliver one event per award id, *in_flight* sends at a time; every one must be delivered."""
    batch = [_event(award_id) for award_id in award_ids]
    started = time.perf_counter()
    for start in range(0, len(batch), in_flight):
        deliveries = await asyncio.gather(*(sink.send(event) for event in batch[start:start + in_flight]))
        failed = [d for d in deliveries if d.verdict is not Verdict.DELIVERED]
        if failed:
            raise SystemExit(f"the NATS sink did not deliver: {failed[0]}")
    return time.perf_counter() - started


def _event(award_id: int) -> AwardEvent:
    return AwardEvent(award_id=award_id, badge="first_post", badge_name="First post", user_id=f"user-{award_id % 997}",
                      awarded_at=datetime(2025, 1, 1, tzinfo=UTC), table="public.posts")


async def _delete_stream(server: str, stream: str) -> None:
    client = await nats.connect(server, allow_reconnect=False)
    try:
        await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


if __name__ == "__main__":
    sys.exit(main())
