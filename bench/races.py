"""Concurrent writers: which fix for lost awards (write skew) costs least and loses nothing.

The race: two transactions insert a user's 4th and 5th sketch at once; each trigger
counts the committed rows plus its own, sees 4, and Collector is never awarded. The
workload is the one that found it: pgbench, N clients, 2,000 users, 8,000 single-row
inserts for random users (about 750 users reach 5 sketches, many of them while
another client is writing for them). Variants, each in a database of its own on one
server, run side by side:

* ``none``: no triggers (the baseline for throughput);
* ``racy``: the check badged made before (held lookup, count, award) — the defect;
* ``blocking``: the same behind ``pg_advisory_xact_lock`` on the user, taken first:
  exact, but every client writing for that user waits, and two transactions writing
  for users A, B and B, A deadlock (measured with two-user transactions);
* ``deferred``: the racy check as a ``DEFERRABLE INITIALLY DEFERRED`` constraint
  trigger, run at commit: the window shrinks, it does not close;
* ``queue every no``: every check that finds the condition false also writes a
  recheck row (a drain awards later): exact with no lock, but a write per miss;
* ``badged``: what ``badged reconcile`` makes now: a try-lock on the user's key, a
  recheck row only when another transaction holds it (``badged.locks``).

Missed awards are counted right after the load (users with 5 sketches or more and no
Collector) and, for the variants that defer, after their drain. Cost is measured
apart, as the write benchmarks do: interleaved timed runs from analysed tables
(100,000 users with 2 sketches each, so every insert runs the check and no plan is
made on an empty table), median ratio to no triggers.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import conninfo

from badged.db import connect
from badged.recheck import drain
from badged.settings import Settings
from bench.common import (
    SEED,
    Row,
    Scale,
    create_database,
    interleaved,
    median_ratio,
    pgbench_path,
    pgbench_tps,
    progress,
)
from bench.writes import install_badged, parsed

USERS = 2000
TRANSACTIONS = 8000
SEED_BADGES: list[dict[str, str]] = json.loads((SEED / "badge.json").read_text())

ONE_USER = f"""\\set uid random(1, {USERS})
INSERT INTO dummy_sketch (user_id, hit_views) VALUES (:uid, 0);
"""
# A, B and B, A: 20 users, so that two clients often meet on the same pair in opposite orders.
TWO_USERS = """\\set a random(1, 20)
\\set b random(1, 20)
BEGIN;
INSERT INTO dummy_sketch (user_id, hit_views) VALUES (:a, 0);
INSERT INTO dummy_sketch (user_id, hit_views) VALUES (:b, 0);
END;
"""

_CHECK = """
    {lock}
    IF NOT EXISTS (SELECT 1 FROM races.award WHERE badge = 'collector' AND user_id = NEW.user_id::text) THEN
        IF (SELECT count(id) >= 5 FROM public.dummy_sketch WHERE user_id = NEW.user_id) THEN
            INSERT INTO races.award (badge, user_id) VALUES ('collector', NEW.user_id::text) ON CONFLICT DO NOTHING;
        {otherwise}
        END IF;
    END IF;
    RETURN NULL;
"""
QUEUE_MISS = "ELSE INSERT INTO races.recheck (user_id) VALUES (NEW.user_id::text);"
BLOCKING = "PERFORM pg_advisory_xact_lock(hashtext(NEW.user_id::text));"


@dataclass(frozen=True)
class Variant:
    name: str
    lock: str = ""
    otherwise: str = ""
    deferred: bool = False


HAND_WRITTEN = {
    "racy": Variant("racy"),
    "blocking": Variant("blocking", lock=BLOCKING),
    "deferred": Variant("deferred", deferred=True),
    "queue every no": Variant("queue every no", otherwise=QUEUE_MISS),
}


@dataclass(frozen=True)
class Run:
    tps: float
    failed: int
    missed: int
    missed_after_drain: int | None


def prepare(admin_dsn: str, name: str) -> str:
    """A database for variant *name*: the seed's tables, 2,000 users, and that variant's trigger."""
    dsn = create_database(admin_dsn, "races_" + name.replace(" ", "_"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((SEED / "schema.sql").read_text().encode())
        conn.execute("INSERT INTO auth_user (username) SELECT 'user' || g FROM generate_series(1, %s) g", (USERS,))
        conn.execute("VACUUM ANALYZE")
    if name == "badged":
        install_badged(dsn, SEED_BADGES)
    elif name in HAND_WRITTEN:
        install_hand_written(dsn, HAND_WRITTEN[name])
    return dsn


def install_hand_written(dsn: str, variant: Variant) -> None:
    body = _CHECK.format(lock=variant.lock, otherwise=variant.otherwise)
    timing = "CONSTRAINT TRIGGER collector AFTER INSERT ON dummy_sketch DEFERRABLE INITIALLY DEFERRED" \
        if variant.deferred else "TRIGGER collector AFTER INSERT ON dummy_sketch"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA races")
        conn.execute("CREATE TABLE races.award (id bigserial PRIMARY KEY, badge text NOT NULL, user_id text NOT NULL, "
                     "UNIQUE (badge, user_id))")
        conn.execute("CREATE TABLE races.recheck (id bigserial PRIMARY KEY, user_id text NOT NULL)")
        conn.execute(f"CREATE FUNCTION races.collector() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN {body} END$$")
        conn.execute(f"CREATE {timing} FOR EACH ROW EXECUTE FUNCTION races.collector()")


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE dummy_sketch")
        for table in ("badged.award", "badged.recheck", "races.award", "races.recheck"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() != (None,):
                conn.execute(f"TRUNCATE {table}")
        conn.execute("VACUUM ANALYZE dummy_sketch")


def pgbench(dsn: str, script: str, clients: int, transactions: int, workdir: Path) -> tuple[float, int]:
    """(tps, failed transactions) of *script* on *clients* clients, *transactions* in all."""
    path = workdir / "race.sql"
    path.write_text(script)
    result = subprocess.run(
        [pgbench_path(), "--no-vacuum", f"--client={clients}", f"--jobs={min(clients, 2)}", "--protocol=prepared",
         f"--transactions={max(1, transactions // clients)}", "--max-tries=1", "--failures-detailed",
         f"--file={path}", conninfo.make_conninfo(dsn)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode not in (0, 2):  # 2: some transactions failed (deadlocks), which we count
        raise SystemExit(f"pgbench failed: {result.stderr.strip()[-500:]}")
    tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", result.stdout, re.M)
    return float(tps.group(1)) if tps else 0.0, int(failed.group(1)) if failed else 0


def missed(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"""
            SELECT count(*) FROM (SELECT user_id FROM dummy_sketch GROUP BY user_id HAVING count(*) >= 5) s
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.award a WHERE a.badge = 'collector'
                              AND a.user_id = s.user_id::text)""").fetchone()
        return int(row[0]) if row else -1


def drain_queue(dsn: str, name: str) -> int | None:
    """What the variant's deferred checks become once drained; None for variants that defer nothing."""
    if name == "badged":
        settings = Settings()
        with connect(dsn, settings) as conn:
            drain(conn, parsed(SEED_BADGES), settings)
        return missed(dsn, "badged")
    if name == "queue every no":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("""INSERT INTO races.award (badge, user_id)
                            SELECT DISTINCT 'collector', r.user_id FROM races.recheck r
                            WHERE (SELECT count(*) FROM dummy_sketch WHERE user_id = r.user_id::int) >= 5
                            ON CONFLICT DO NOTHING""")
        return missed(dsn, "races")
    return None


def run(dsn: str, name: str, script: str, clients: int, transactions: int, workdir: Path) -> Run:
    reset(dsn)
    tps, failed = pgbench(dsn, script, clients, transactions, workdir)
    schema = "badged" if name == "badged" else "races"
    lost = missed(dsn, schema) if name != "none" else 0
    return Run(tps, failed, lost, drain_queue(dsn, name))


#: users in the cost databases (2 sketches each): enough that no user reaches 5 in a run
COST_USERS = {"full": 100_000, "quick": 100_000, "smoke": 2_000}


def cost_script(users: int) -> str:
    return f"""\\set uid random(1, {users})
INSERT INTO dummy_sketch (user_id, hit_views) VALUES (:uid, 0);
"""


def cost_database(admin_dsn: str, name: str, users: int) -> str:
    """*users* users with 2 sketches each, analysed: every insert checks (no user holds Collector yet)."""
    dsn = create_database(admin_dsn, "races_cost_" + name.replace(" ", "_"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((SEED / "schema.sql").read_text().encode())
        conn.execute("INSERT INTO auth_user (username) SELECT 'user' || g FROM generate_series(1, %s) g", (users,))
        conn.execute("INSERT INTO dummy_sketch (user_id) SELECT 1 + g %% %s FROM generate_series(1, %s) g",
                     (users, 2 * users))
        conn.execute("VACUUM ANALYZE")
    if name == "badged":
        install_badged(dsn, SEED_BADGES)
    elif name in HAND_WRITTEN:
        install_hand_written(dsn, HAND_WRITTEN[name])
    return dsn


def timed(dsn: str, scale: Scale, workdir: Path, clients: int) -> Callable[[], float]:
    users = COST_USERS[scale.name]

    def run() -> float:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM dummy_sketch WHERE id > %s", (2 * users,))
            conn.execute("VACUUM ANALYZE dummy_sketch")
        return pgbench_tps(dsn, cost_script(users), scale.seconds, workdir, clients)

    return run


def measure(admin_dsn: str, scale: Scale, workdir: Path) -> list[Row]:
    names = ["none", "racy", "blocking", "deferred", "queue every no", "badged"]
    rows = lost_awards(admin_dsn, scale, workdir, names)
    progress(f"cost of the check, 16 clients, {scale.rounds} interleaved rounds")
    databases = {name: cost_database(admin_dsn, name, COST_USERS[scale.name]) for name in names}
    got = interleaved({name: timed(databases[name], scale, workdir, 16) for name in names}, scale.rounds)
    for name in names[1:]:
        ratio = median_ratio(got[name], got["none"])
        rows.append(Row(f"INSERT rate, 16 clients, the check runs, {name} ÷ no triggers (tx/s)",
                        f"{statistics.median(got['none']):,.0f}", f"{statistics.median(got[name]):,.0f}",
                        f"{ratio:.2f}", "report", None))
    return rows


def lost_awards(admin_dsn: str, scale: Scale, workdir: Path, names: list[str]) -> list[Row]:
    databases = {name: prepare(admin_dsn, name) for name in names}
    transactions = TRANSACTIONS if scale.name != "smoke" else 400
    rounds = {"full": 3, "quick": 1, "smoke": 1}[scale.name]
    rows: list[Row] = []
    for clients in (16, 64):
        progress(f"lost awards and cost, {clients} clients, {rounds} rounds of {transactions:,} inserts")
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for round_number in range(rounds):
            order = names if round_number % 2 == 0 else list(reversed(names))
            for name in order:
                runs[name].append(run(databases[name], name, ONE_USER, clients, transactions, workdir))
        for name in names[1:]:
            rows.append(_row(f"{clients} clients, {name}: awards missing at commit in {rounds} runs of "
                             f"{transactions:,} inserts (after its drain)", runs[name]))
    progress("two-user transactions (A, B against B, A), 16 clients")
    for name in ("racy", "blocking", "deferred", "badged"):
        reset(databases[name])
        _tps, failed = pgbench(databases[name], TWO_USERS, 16, transactions // 2, workdir)
        rows.append(Row(f"16 clients, two users per transaction, {name}: failed transactions (deadlocks)",
                        "", f"{failed}", "", "0" if name == "badged" else "report",
                        failed == 0 if name == "badged" else None))
    return rows


def _row(what: str, runs: list[Run]) -> Row:
    lost = sum(r.missed for r in runs)
    after = [r.missed_after_drain for r in runs]
    drained = "" if any(a is None for a in after) else f" ({sum(a for a in after if a is not None)})"
    failed = sum(r.failed for r in runs)
    failures = f", {failed} failed transactions" if failed else ""
    final = lost if any(a is None for a in after) else sum(a for a in after if a is not None)
    badged = what.split(", ")[1].startswith("badged")
    return Row(what, "", f"{lost}{drained}{failures}", "", "0 lost" if badged else "report",
               final == 0 and not failed if badged else None)
