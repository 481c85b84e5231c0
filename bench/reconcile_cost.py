"""Reconcile at scale: 1,000 badges, a no-op pass, and an edit of one badge.

A no-op reconcile is what the daemon does on every resync, in every replica, so it
must be cheap and run no DDL at all; an edit must touch only the edited badge. DDL is
counted by the server itself (an event trigger on ``ddl_command_end``), not by badged.
"""

from __future__ import annotations

import json
import statistics
import time

import psycopg

from badged.db import connect
from badged.plan import Outcome
from badged.reconcile import reconcile
from badged.settings import Settings
from badged.spec import Badge, parse_badges
from bench.common import SEED, Row, Scale, create_database, progress

COUNT = 1000


def thousand_badges() -> list[dict[str, str]]:
    shapes = [
        ("insert", "dummy_sketch", "user_id", "count(id) >= {n} from dummy_sketch where user_id = NEW.user_id"),
        ("update", "dummy_sketch", "user_id", "hit_views > {n}"),
        ("update", "auth_user", "id", "age(NEW.date_joined) > interval '{n} days'"),
        ("insert", "dummy_sketch", "user_id", "length(NEW.title) > {n} % 200"),
    ]
    items = []
    for n in range(COUNT):
        event, table, user, condition = shapes[n % len(shapes)]
        items.append({"name": f"Badge {n}", "code": f"b{n:04d}", "condition": condition.format(n=n),
                      "trigger_condition": event, "trigger_table": table, "user_field": user})
    return items


def _parse(items: list[dict[str, str]]) -> tuple[Badge, ...]:
    return parse_badges(json.dumps(items), source="bench", prefix="badged_", allow_empty=False)


def _ddl_count(conn: psycopg.Connection[object]) -> int:
    row = conn.execute("SELECT count(*) FROM public.ddl_log").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _pass(dsn: str, badges: tuple[Badge, ...]) -> tuple[Outcome, float]:
    settings = Settings(statement_timeout_ms=600_000)
    with connect(dsn, settings) as conn:
        started = time.perf_counter()
        outcome = reconcile(conn, badges, settings, apply=True)
        return outcome, time.perf_counter() - started


def measure(admin_dsn: str, scale: Scale) -> list[Row]:
    dsn = create_database(admin_dsn, "bench_reconcile")
    with psycopg.connect(dsn, autocommit=True) as log:
        log.execute((SEED / "schema.sql").read_text().encode())
        log.execute("CREATE TABLE public.ddl_log (tag text)")
        log.execute("CREATE FUNCTION public.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN INSERT INTO public.ddl_log VALUES (tg_tag); END $$")
        log.execute("CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl()")
        items = thousand_badges()
        progress(f"first reconcile of {COUNT} badges")
        _, first = _pass(dsn, _parse(items))
        before = _ddl_count(log)
        times = [_pass(dsn, _parse(items))[1] for _ in range(max(3, scale.rounds))]
        noop_ddl = _ddl_count(log) - before
        noop = statistics.median(times)

        edited = [dict(item, condition="count(id) >= 7 from dummy_sketch where user_id = NEW.user_id")
                  if item["code"] == "b0500" else item for item in items]
        before = _ddl_count(log)
        outcome, edit_seconds = _pass(dsn, _parse(edited))
        edit_ddl = _ddl_count(log) - before
    touched = sorted({code for step in outcome.plan.steps for code in step.badges})
    return [
        Row(f"first reconcile of {COUNT:,} badges (s)", "", f"{first:.2f}", "", "report", None),
        Row(f"no-op reconcile of {COUNT:,} badges (s; DDL statements)", "", f"{noop:.3f}; {noop_ddl} DDL", "",
            "≤ 0.3 s; 0 DDL", noop <= 0.3 and noop_ddl == 0),
        Row(f"edit 1 badge among {COUNT:,} (badges touched; DDL statements; s)", "",
            f"{','.join(touched)}; {edit_ddl} DDL; {edit_seconds:.3f}", "", "only b0500",
            touched == ["b0500"]),
    ]
