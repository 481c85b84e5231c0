"""Reconcile against a real PostgreSQL: idempotence, drift, removal, foreign objects, races, locks."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import badged.reconcile
from badged.db import connect
from badged.errors import DatabaseMismatch, LockTimeout
from badged.plan import Action, Outcome
from badged.reconcile import reconcile
from badged.settings import Settings
from badged.spec import Badge
from tests.conftest import SEED_BADGES
from tests.helpers import SEED_OBJECTS, apply, awards, badge, badges_from, object_oids, plan, triggers


def steps(outcome: Outcome) -> list[tuple[str, str, str]]:
    return [(s.action.symbol, s.kind, s.name) for s in outcome.plan.steps]


def reasons(outcome: Outcome) -> dict[str, str]:
    return {f"{s.kind} {s.name}": s.reason for s in outcome.plan.steps}


def statement_count(conn: psycopg.Connection[Any]) -> int:
    """DDL statements the server saw, counted by an event trigger installed for the test."""
    row = conn.execute("SELECT count(*) FROM ddl_log").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def ddl_log(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE TABLE ddl_log (tag text, at timestamptz DEFAULT clock_timestamp())")
    conn.execute("""CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS
                    $$ BEGIN INSERT INTO public.ddl_log (tag) VALUES (tg_tag); END $$""")
    conn.execute("CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl()")
    return conn


def test_first_reconcile_creates_everything_in_one_go(dsn: str, conn: psycopg.Connection[Any]) -> None:
    outcome = apply(dsn, SEED_BADGES)
    assert outcome.applied
    assert set(steps(outcome)) >= {
        ("+", "schema", "badged"), ("+", "table", "badged.award"), ("+", "table", "badged.badge"),
        ("+", "function", "badged.badged_public$dummy_sketch$update_of"),
        ("+", "trigger", "badged_public$dummy_sketch$update_of on public.dummy_sketch"),
        ("+", "trigger", "badged_public$auth_user$update on public.auth_user"), ("+", "badge", "collector"),
    }
    assert set(object_oids(conn)) == {f"{kind} {name}" for kind in ("function", "trigger")
                                      for name in SEED_OBJECTS.values()}


def test_a_second_reconcile_runs_no_ddl_and_keeps_every_oid(dsn: str, ddl_log: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    before, ddl_before = object_oids(ddl_log), statement_count(ddl_log)
    second = apply(dsn, SEED_BADGES)
    assert second.plan.in_sync and second.statements == 0
    assert statement_count(ddl_log) == ddl_before
    assert object_oids(ddl_log) == before
    assert plan(dsn, SEED_BADGES).plan.in_sync


def test_a_hand_edited_function_body_is_detected_and_repaired(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    oids = object_oids(conn)
    conn.execute("CREATE OR REPLACE FUNCTION badged.badged_public$dummy_sketch$update_of() RETURNS trigger "
                 "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp "
                 "AS 'BEGIN RETURN NULL; END'")
    pending = plan(dsn, SEED_BADGES)
    assert reasons(pending) == {
        "function badged.badged_public$dummy_sketch$update_of": "drifted: function body edited by hand"}
    apply(dsn, SEED_BADGES)
    assert object_oids(conn) == oids, "CREATE OR REPLACE keeps the function's OID"
    assert plan(dsn, SEED_BADGES).plan.in_sync
    conn.execute("INSERT INTO auth_user (username) VALUES ('bob')")
    conn.execute("INSERT INTO dummy_sketch (user_id, hit_views) VALUES (1, 0)")
    conn.execute("UPDATE dummy_sketch SET hit_views = 2000")
    assert awards(conn) == {("star", "1")}, "the repaired function awards again"


@pytest.mark.parametrize("sabotage, reason", [
    ("DROP TRIGGER badged_public$dummy_sketch$insert ON dummy_sketch", "missing: dropped outside badged"),
    ("ALTER TABLE dummy_sketch DISABLE TRIGGER badged_public$dummy_sketch$insert",
     "drifted: trigger disabled by hand"),
    ("ALTER TABLE dummy_sketch ENABLE ALWAYS TRIGGER badged_public$dummy_sketch$insert",
     "drifted: trigger's firing mode"),
    ("COMMENT ON TRIGGER badged_public$dummy_sketch$insert ON dummy_sketch IS NULL",
     "drifted: trigger recreated by hand"),
    ("ALTER FUNCTION badged.badged_public$dummy_sketch$insert() SECURITY INVOKER",
     "drifted: SECURITY DEFINER removed by hand"),
    ("ALTER FUNCTION badged.badged_public$dummy_sketch$insert() SET search_path = public",
     "drifted: search_path changed by hand"),
])
def test_drift_is_detected_from_the_catalog_and_repaired(dsn: str, conn: psycopg.Connection[Any], sabotage: str,
                                                         reason: str) -> None:
    apply(dsn, SEED_BADGES)
    conn.execute(sabotage)
    pending = plan(dsn, SEED_BADGES)
    assert len(pending.plan.steps) == 1
    assert pending.plan.steps[0].reason.startswith(reason)
    assert pending.plan.steps[0].badges == ("collector",)
    apply(dsn, SEED_BADGES)
    assert plan(dsn, SEED_BADGES).plan.in_sync


def test_foreign_triggers_and_functions_are_never_touched(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'")
    conn.execute("CREATE TRIGGER audit_sketch AFTER INSERT ON dummy_sketch FOR EACH ROW EXECUTE FUNCTION audit()")
    # under the prefix, but calling someone else's function: not ours either
    conn.execute("CREATE TRIGGER badged_lookalike AFTER INSERT ON dummy_sketch FOR EACH ROW EXECUTE FUNCTION audit()")
    apply(dsn, SEED_BADGES)
    conn.execute("CREATE FUNCTION badged.helper() RETURNS int LANGUAGE sql AS 'SELECT 1'")  # in our schema, no prefix
    before = conn.execute("SELECT tgname, oid FROM pg_trigger WHERE tgname IN ('audit_sketch', 'badged_lookalike')"
                          " UNION ALL SELECT proname, oid FROM pg_proc WHERE proname IN ('audit', 'helper')"
                          ).fetchall()
    removal = apply(dsn, [], Settings())
    assert {s.kind for s in removal.plan.steps} == {"trigger", "function", "badge"}
    after = conn.execute("SELECT tgname, oid FROM pg_trigger WHERE tgname IN ('audit_sketch', 'badged_lookalike')"
                         " UNION ALL SELECT proname, oid FROM pg_proc WHERE proname IN ('audit', 'helper')"
                         ).fetchall()
    assert sorted(after) == sorted(before) and len(after) == 4


def test_a_prefixed_trigger_of_another_tool_with_our_name_is_a_clear_error(dsn: str,
                                                                           conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE FUNCTION public.audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'")
    conn.execute("CREATE TRIGGER badged_public$dummy_sketch$update_of AFTER UPDATE ON dummy_sketch "
                 "FOR EACH ROW EXECUTE FUNCTION audit()")
    expected = ("badge 'star': trigger badged_public$dummy_sketch$update_of on public.dummy_sketch already exists "
                "and calls public.audit()")
    with pytest.raises(DatabaseMismatch, match=re.escape(expected)):
        apply(dsn, SEED_BADGES)


def test_a_removed_badge_leaves_nothing_behind_but_its_awards(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    conn.execute("INSERT INTO auth_user (username) VALUES ('bob')")
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT 1 FROM generate_series(1, 5)")
    without_collector = [b for b in SEED_BADGES if b["code"] != "collector"]
    outcome = apply(dsn, without_collector)
    assert steps(outcome) == [
        ("-", "badge", "collector"),
        ("-", "trigger", "badged_public$dummy_sketch$insert on public.dummy_sketch"),
        ("-", "function", "badged.badged_public$dummy_sketch$insert"),
    ]
    comments = conn.execute("SELECT obj_description(oid, 'pg_proc') FROM pg_proc WHERE proname LIKE 'badged%' "
                            "UNION ALL SELECT obj_description(oid, 'pg_trigger') FROM pg_trigger "
                            "WHERE tgname LIKE 'badged%'").fetchall()
    assert comments and not any("collector" in (comment or "") for (comment,) in comments)
    assert awards(conn) == {("collector", "1")}
    assert conn.execute("SELECT removed_at IS NOT NULL FROM badged.badge WHERE code = 'collector'").fetchone() == (
        True,)
    restored = apply(dsn, SEED_BADGES)
    assert ("+", "badge", "collector") in steps(restored)


def test_a_changed_condition_replaces_the_function_in_place(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    oids = object_oids(conn)
    changed = [dict(b, condition="hit_views > 10") if b["code"] == "star" else b for b in SEED_BADGES]
    outcome = apply(dsn, changed)
    assert reasons(outcome) == {
        "function badged.badged_public$dummy_sketch$update_of": "badge changed in badge.json: star",
        "badge star": "badge changed"}
    assert object_oids(conn) == oids


def test_a_badge_moved_to_another_table_follows_it(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE photo (user_id int NOT NULL, hit_views int NOT NULL DEFAULT 0)")
    apply(dsn, SEED_BADGES)
    moved = [dict(b, trigger_table="photo") if b["code"] == "star" else b for b in SEED_BADGES]
    outcome = apply(dsn, moved)
    assert ("-", "trigger", "badged_public$dummy_sketch$update_of on public.dummy_sketch") in steps(outcome)
    assert ("+", "trigger", "badged_public$photo$update_of on public.photo") in steps(outcome)
    conn.execute("INSERT INTO photo VALUES (9, 0)")
    conn.execute("UPDATE photo SET hit_views = 5000")
    assert awards(conn) == {("star", "9")}


def test_a_badge_whose_condition_reads_new_columns_changes_its_trigger(dsn: str,
                                                                       conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    changed = [dict(b, condition="title = 'masterpiece'") if b["code"] == "star" else b for b in SEED_BADGES]
    outcome = apply(dsn, changed)
    assert ("~", "trigger", "badged_public$dummy_sketch$update_of on public.dummy_sketch") in steps(outcome)
    (definition,) = conn.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                                 "WHERE tgname = 'badged_public$dummy_sketch$update_of'").fetchone() or ("",)
    assert "UPDATE OF title" in definition


@pytest.mark.parametrize("broken, field, message", [
    (badge("x", "true", table="no_such_table"), "trigger_table", "table no_such_table does not exist"),
    (badge("x", "true", user_field="userid"), "user_field", "did you mean 'user_id'?"),
    (badge("x", "count(*) > 1 from no_such_table"), "condition", 'relation "no_such_table" does not exist'),
    (badge("x", "no_such_column > 1"), "condition", "no_such_column"),
    (badge("x", "hit_views + 1"), "condition", "must be type boolean"),
    (badge("x", "no_such_function(hit_views)"), "condition", "no_such_function"),
])
def test_a_badge_that_does_not_fit_the_database_is_refused_and_nothing_applied(
    dsn: str, conn: psycopg.Connection[Any], broken: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(DatabaseMismatch) as caught:
        apply(dsn, [*SEED_BADGES, broken])
    (problem,) = caught.value.problems
    assert (problem.index, problem.code, problem.field) == (3, "x", field)
    assert message in problem.message
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'badged'").fetchone() == (0,)


def test_a_condition_that_only_fails_at_run_time_is_accepted(dsn: str) -> None:
    """Constant folding must not run during the check: 1/0 is the trigger's problem, guarded at run time."""
    outcome = apply(dsn, [badge("x", "1 / 0 > 1")])
    assert outcome.applied


def test_a_long_application_transaction_makes_reconcile_fail_fast(dsn: str, conn: psycopg.Connection[Any]) -> None:
    settings = Settings(lock_timeout_ms=200)
    with psycopg.connect(dsn) as app:
        app.execute("LOCK TABLE dummy_sketch IN ROW EXCLUSIVE MODE")  # an app transaction in progress
        with pytest.raises(LockTimeout, match="retry later"):
            apply(dsn, SEED_BADGES, settings)
        app.rollback()
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'badged'").fetchone() == (0,)
    assert apply(dsn, SEED_BADGES, settings).applied


@pytest.mark.slow
def test_racing_reconcilers_apply_once_and_never_fail(dsn: str, conn: psycopg.Connection[Any]) -> None:
    settings = Settings(lock_timeout_ms=10000)
    badges = badges_from(SEED_BADGES)
    for attempt, items in enumerate([SEED_BADGES, SEED_BADGES[:2], SEED_BADGES]):
        badges = badges_from(items)
        barrier = threading.Barrier(4)
        outcomes: list[Outcome] = []
        failures: list[BaseException] = []

        def race(barrier: threading.Barrier, badges: tuple[Badge, ...], outcomes: list[Outcome],
                 failures: list[BaseException]) -> None:
            try:
                with connect(dsn, settings) as own:
                    barrier.wait(timeout=10)
                    outcomes.append(reconcile(own, badges, settings, apply=True))
            except BaseException as exc:  # collected and asserted below
                failures.append(exc)

        threads = [threading.Thread(target=race, args=(barrier, badges, outcomes, failures)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert failures == [], f"attempt {attempt}"
        assert sum(1 for o in outcomes if o.applied) == 1, f"attempt {attempt}: exactly one applies"
        assert plan(dsn, items).plan.in_sync


def test_prefix_and_schema_are_configurable(dsn: str, conn: psycopg.Connection[Any]) -> None:
    settings = Settings(prefix="bdg_", schema="awards_here", channel="earned")
    apply(dsn, SEED_BADGES, settings)
    apply(dsn, SEED_BADGES)  # a second, independent configuration
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bdg\\_%'").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                        "WHERE nspname = 'awards_here'").fetchone() == (3,)
    assert apply(dsn, SEED_BADGES, settings).plan.in_sync
    removal = apply(dsn, [], settings)
    assert all(s.action is Action.DROP for s in removal.plan.steps)
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'badged\\_%'").fetchone() == (3,)


def test_one_table_named_with_and_without_its_schema_is_one_table(dsn: str, conn: psycopg.Connection[Any]) -> None:
    # a valid badge.json: sorting the two names (schema None against 'public') crashed plan, reconcile,
    # status and run with a TypeError, so one ConfigMap edit crash-looped every sidecar
    items = [badge("a", "NEW.hit_views > 1", table="public.dummy_sketch"),
             badge("b", "NEW.hit_views > 2", table="dummy_sketch")]
    assert plan(dsn, items).plan.steps
    apply(dsn, items)
    assert triggers(dsn) == {"badged_public$dummy_sketch$insert"}
    user = conn.execute("INSERT INTO auth_user (username) VALUES ('bob') RETURNING id").fetchone()[0]
    conn.execute("INSERT INTO dummy_sketch (user_id, hit_views) VALUES (%s, 5)", (user,))
    assert awards(conn) == {("a", str(user)), ("b", str(user))}
    assert plan(dsn, items).plan.steps == ()


@contextlib.contextmanager
def _another_reconcile(dsn: str, seconds: float) -> Iterator[None]:
    """Another reconcile, mid-apply: badged's schema lock held by another connection for *seconds*."""
    held = threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as other:
            other.execute("SELECT pg_advisory_xact_lock(hashtextextended('badged:badged', 0))")
            held.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        yield
    finally:
        holder.join()


def test_reconcile_waits_for_another_reconcile_longer_than_lock_timeout(dsn: str) -> None:
    # waiting for a second replica or a Job is not an error: this failed after lock_timeout (0.2 s here)
    with _another_reconcile(dsn, 1.0):
        outcome = apply(dsn, SEED_BADGES, Settings(lock_timeout_ms=200))
    assert outcome.applied and outcome.seconds >= 0.5


def test_a_reconcile_that_never_ends_makes_the_next_one_fail_after_statement_timeout(dsn: str) -> None:
    with _another_reconcile(dsn, 2.0), \
            pytest.raises(LockTimeout, match=r"another badged reconcile of schema 'badged' held its lock for "
                                             r"more than 0.5 s; nothing was applied, retry later"):
        apply(dsn, SEED_BADGES, Settings(lock_timeout_ms=200, statement_timeout_ms=500))


def test_no_application_table_is_locked_until_the_trigger_ddl(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 item 12: functions, registry rows and their checks run before any lock that blocks app writes.

    The checks of what was created are the slow part of a big apply (a PREPARE per
    function): trigger DDL, which locks its table until commit, must come after them.
    """
    held: list[tuple[str, str]] = []
    check_rendered = badged.reconcile.check_rendered

    def spy(conn: psycopg.Connection[Any], *args: Any) -> None:
        held.extend(conn.execute(
            "SELECT c.relname::text, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = pg_backend_pid() AND c.relname IN ('auth_user', 'dummy_sketch') "
            "AND l.mode NOT IN ('AccessShareLock')").fetchall())
        check_rendered(conn, *args)

    monkeypatch.setattr(badged.reconcile, "check_rendered", spy)
    outcome = apply(dsn, SEED_BADGES)
    assert any(step.kind == "trigger" for step in outcome.plan.steps)
    assert held == [], "app writes would wait for the checks"
