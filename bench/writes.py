"""The write path: what badge triggers cost the application's INSERTs and UPDATEs.

Each comparison runs pgbench (one client, prepared statements) against databases of
one server that differ only in their triggers:

* ``none``: no triggers at all;
* ``badged``: the triggers ``badged reconcile`` makes;
* ``seed-shaped``: the original django-pg-badges' shape, one plpgsql function per
  badge that evaluates its condition on every row and then checks whether the
  award exists (with its ``code=code`` defect fixed, so it awards correctly).

Every run starts from the same state: 1,000 users with 20 sketches each (analysed,
as a live application's tables are), the rows of earlier runs deleted. Awards are
kept: one unmeasured warm-up run per variant first earns what the users qualify for,
so the measured runs see a running application's steady state (most users hold the
badges they qualify for, and tiered badges always have a next tier to check), not
the burst of first awards right after badges are deployed. The variants run
interleaved, and the median of the per-round ratios is reported. (Starting from an
empty table would measure something else again: plpgsql keeps the plans it made while
the table was empty, sequential scans, until the next ANALYZE.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from badged.db import connect
from badged.reconcile import reconcile
from badged.settings import Settings
from badged.spec import Badge, parse_badges
from bench.common import SEED, Row, Scale, create_database, interleaved, median_ratio, pgbench_tps, progress

USERS = 1000
BASE_ROWS = 20_000  # sketches every run starts with (20 per user)
SEED_BADGES: list[dict[str, str]] = json.loads((SEED / "badge.json").read_text())

INSERT_SCRIPT = f"""\\set uid random(1, {USERS})
INSERT INTO dummy_sketch (user_id, title, hit_views) VALUES (:uid, 'sketch', 0);
"""
UPDATE_SCRIPT = f"""\\set id random(1, {BASE_ROWS})
UPDATE dummy_sketch SET title = 'renamed' WHERE id = :id;
"""


def badge(code: str, condition: str, event: str = "insert") -> dict[str, str]:
    return {"name": code.title(), "code": code, "condition": condition, "trigger_condition": event,
            "trigger_table": "dummy_sketch", "user_field": "user_id"}


def tiered_badges(count: int = 50) -> list[dict[str, str]]:
    """Bronze, silver, gold… on one count: the common shape of real badge sets."""
    return [badge(f"sketches_{5 * k}", f"count(id) >= {5 * k} from dummy_sketch where user_id = NEW.user_id")
            for k in range(1, count + 1)]


def unrelated_badges(count: int = 50) -> list[dict[str, str]]:
    """Insert badges that share nothing: every query has its own WHERE, every expression its own column use."""
    shapes = [
        "count(*) >= 3 from dummy_sketch where user_id = NEW.user_id and hit_views >= {n}",
        "NEW.hit_views = {n}",
        "exists (select 1 from auth_user where id = NEW.user_id and length(username) = {n})",
        "length(NEW.title) = {n} + 20",
        "sum(hit_views) > {n} * 100 from dummy_sketch where user_id = NEW.user_id and title <> 'x{n}'",
    ]
    return [badge(f"unrelated_{i}", shapes[i % len(shapes)].format(n=i)) for i in range(count)]


def update_badges(count: int = 50) -> list[dict[str, str]]:
    """Update badges whose conditions read only hit_views of the changed row."""
    return [badge(f"views_{i}", f"hit_views > {1000 * (i + 1)}", event="update") for i in range(count)]


def parsed(items: list[dict[str, str]]) -> tuple[Badge, ...]:
    return parse_badges(json.dumps(items), source="bench", prefix="badged_", allow_empty=True)


def app_database(admin_dsn: str, name: str, *, rows: int = BASE_ROWS) -> str:
    dsn = create_database(admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((SEED / "schema.sql").read_text().encode())
        conn.execute("INSERT INTO auth_user (username, date_joined) SELECT 'user' || g, now() - g * interval '1 day' "
                     "FROM generate_series(1, %s) g", (USERS,))
        if rows:
            conn.execute("INSERT INTO dummy_sketch (user_id, title) SELECT 1 + g %% %s, 'sketch' "
                         "FROM generate_series(1, %s) g", (USERS, rows))
        conn.execute("VACUUM ANALYZE")
    return dsn


def install_badged(dsn: str, items: list[dict[str, str]]) -> None:
    settings = Settings()
    with connect(dsn, settings) as conn:
        reconcile(conn, parsed(items), settings, apply=True)


def install_seed_shaped(dsn: str, items: list[dict[str, str]]) -> None:
    """The original's shape: condition first, then "already awarded?", one function per badge."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA seed")
        conn.execute("CREATE TABLE seed.award (id bigserial PRIMARY KEY, badge text NOT NULL, user_id text NOT NULL, "
                     "awarded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (badge, user_id))")
        for item in parsed(items):
            row = item.event.changed_row
            name = sql.Identifier(f"seed_{item.code}")
            body = sql.SQL("""
                BEGIN
                    IF {condition} THEN
                        IF NOT EXISTS (SELECT 1 FROM seed.award WHERE badge = {code}
                                       AND user_id = {row}.{user}::text) THEN
                            INSERT INTO seed.award (badge, user_id) VALUES ({code}, {row}.{user}::text);
                        END IF;
                    END IF;
                    RETURN NULL;
                END
            """).format(condition=sql.SQL(item.condition.expression), code=sql.Literal(item.code),
                        row=sql.SQL(row), user=sql.Identifier(item.user_field))
            conn.execute(sql.SQL("CREATE FUNCTION seed.{}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
                name, sql.Literal(body.as_string(conn))))
            conn.execute(sql.SQL("CREATE TRIGGER {} AFTER {} ON dummy_sketch FOR EACH ROW EXECUTE FUNCTION seed.{}()")
                         .format(name, sql.SQL(item.event.value.upper()), name))


def reset(dsn: str) -> None:
    """Back to the starting state: the base sketches only (awards stay: see the module's docstring)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM dummy_sketch WHERE id > %s", (BASE_ROWS,))
        conn.execute("SELECT setval(pg_get_serial_sequence('dummy_sketch', 'id'), %s)", (BASE_ROWS,))
        conn.execute("VACUUM ANALYZE")


def inserts(dsn: str, scale: Scale, workdir: Path) -> Callable[[], float]:
    reset(dsn)
    pgbench_tps(dsn, INSERT_SCRIPT, scale.seconds, workdir)  # warm-up: the awards users qualify for

    def run() -> float:
        reset(dsn)
        return pgbench_tps(dsn, INSERT_SCRIPT, scale.seconds, workdir)

    return run


def concurrent_inserts(dsn: str, scale: Scale, workdir: Path, clients: int) -> Callable[[], float]:
    reset(dsn)
    pgbench_tps(dsn, INSERT_SCRIPT, scale.seconds, workdir, clients)  # warm-up, as for one client

    def run() -> float:
        reset(dsn)
        return pgbench_tps(dsn, INSERT_SCRIPT, scale.seconds, workdir, clients)

    return run


def updates(dsn: str, scale: Scale, workdir: Path) -> Callable[[], float]:
    def run() -> float:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM dummy_sketch")
        return pgbench_tps(dsn, UPDATE_SCRIPT, scale.seconds, workdir)

    return run


def bulk_insert_seconds(dsn: str, rows: int) -> Callable[[], float]:
    def run() -> float:
        reset(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("INSERT INTO dummy_sketch (user_id, title) SELECT 1 + g %% %s, 'bulk' "
                         "FROM generate_series(1, %s) g", (USERS, rows))
            return time.perf_counter() - started

    return run


def measure(admin_dsn: str, scale: Scale, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    none = app_database(admin_dsn, "bench_none")

    progress("insert rate, 3 seed badges")
    seed3 = app_database(admin_dsn, "bench_seed3")
    install_badged(seed3, SEED_BADGES)
    got = interleaved({"none": inserts(none, scale, workdir), "badged": inserts(seed3, scale, workdir)},
                      scale.rounds)
    rows.append(_ratio_row("INSERT rate, 3 seed badges ÷ no triggers (tx/s)", got["none"], got["badged"],
                           goal=0.92))

    progress("insert rate, 16 clients, 3 seed badges")
    got = interleaved({"none": concurrent_inserts(none, scale, workdir, 16),
                       "badged": concurrent_inserts(seed3, scale, workdir, 16)}, scale.rounds)
    rows.append(_ratio_row("INSERT rate, 16 clients, 1,000 users, 3 seed badges ÷ no triggers (tx/s)", got["none"],
                           got["badged"], goal=0.85))

    progress("insert rate, 50 tiered badges")
    tiered, tiered_seed = app_database(admin_dsn, "bench_tiered"), app_database(admin_dsn, "bench_tiered_seed")
    install_badged(tiered, tiered_badges())
    install_seed_shaped(tiered_seed, tiered_badges())
    got = interleaved({"none": inserts(none, scale, workdir), "badged": inserts(tiered, scale, workdir),
                       "seed": inserts(tiered_seed, scale, workdir)}, scale.rounds)
    rows.append(_ratio_row("INSERT rate, 50 tiered badges ÷ no triggers (tx/s)", got["none"], got["badged"],
                           goal=0.75))
    rows.append(_ratio_row("INSERT rate, 50 tiered badges ÷ seed-shaped (tx/s)", got["seed"], got["badged"],
                           goal=3.0))

    progress("insert rate, 50 unrelated badges")
    unrelated, unrelated_seed = (app_database(admin_dsn, "bench_unrelated"),
                                 app_database(admin_dsn, "bench_unrelated_seed"))
    install_badged(unrelated, unrelated_badges())
    install_seed_shaped(unrelated_seed, unrelated_badges())
    got = interleaved({"badged": inserts(unrelated, scale, workdir), "seed": inserts(unrelated_seed, scale, workdir)},
                      scale.rounds)
    rows.append(_ratio_row("INSERT rate, 50 unrelated badges ÷ seed-shaped (tx/s)", got["seed"], got["badged"],
                           goal=1.2))

    progress("update rate, 50 update badges, unread column")
    update_none = app_database(admin_dsn, "bench_update_none")
    update_badged = app_database(admin_dsn, "bench_update_badged")
    install_badged(update_badged, update_badges())
    got = interleaved({"none": updates(update_none, scale, workdir), "badged": updates(update_badged, scale, workdir)},
                      scale.rounds)
    rows.append(_ratio_row("UPDATE of an unread column, 50 update badges ÷ no triggers (tx/s)", got["none"],
                           got["badged"], goal=0.95))

    progress(f"bulk INSERT … SELECT of {scale.bulk_rows} rows")
    got = interleaved({"none": bulk_insert_seconds(none, scale.bulk_rows),
                       "badged": bulk_insert_seconds(seed3, scale.bulk_rows)}, scale.rounds)
    none_rates = [scale.bulk_rows / s for s in got["none"]]
    badged_rates = [scale.bulk_rows / s for s in got["badged"]]
    rows.append(_ratio_row(f"bulk INSERT … SELECT of {scale.bulk_rows:,} rows, seed badges ÷ no triggers (rows/s)",
                           none_rates, badged_rates, goal=None))
    return rows


def _ratio_row(what: str, baseline: list[float], badged: list[float], goal: float | None) -> Row:
    ratio = median_ratio(badged, baseline)
    median = sorted(baseline)[len(baseline) // 2], sorted(badged)[len(badged) // 2]
    return Row(what, f"{median[0]:,.0f}", f"{median[1]:,.0f}", f"{ratio:.2f}",
               "report" if goal is None else f"≥ {goal:g}", None if goal is None else ratio >= goal)
