"""A plan is a promise: whatever would make ``reconcile`` fail makes ``plan`` fail, and ``plan`` changes nothing.

``plan`` applies its steps in a savepoint that is always rolled back, under the same
advisory lock as ``reconcile``, and PREPAREs the queries badged wrote into the
functions (the shared scans rewrite conditions). Before issue 10, a CASE at the top of
a condition or an update badge on a json column passed ``plan`` and failed ``reconcile``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

import badged.reconcile
from badged.errors import ApplyFailed, DatabaseMismatch
from badged.routines import RoutineKind, Routines
from tests.conftest import SEED_BADGES
from tests.helpers import apply, badge, object_oids, plan


def badged_objects(conn: psycopg.Connection[Any]) -> tuple[bool, dict[str, int]]:
    row = conn.execute("SELECT to_regnamespace('badged') IS NOT NULL").fetchone()
    return bool(row and row[0]), object_oids(conn)


@pytest.fixture
def no_trigger_rights(admin_dsn: str, dsn: str) -> Iterator[str]:
    """A role that may create badged's schema and read the seed tables, but not put triggers on them."""
    role = f"badged_reader_{uuid.uuid4().hex[:8]}"
    database = conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(str(database)),
                                                                         sql.Identifier(role)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON auth_user, dummy_sketch TO {}").format(sql.Identifier(role)))
    try:
        yield conninfo.make_conninfo(dsn, user=role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_plan_fails_where_reconcile_would_and_names_the_step(no_trigger_rights: str, conn: psycopg.Connection[Any]
                                                             ) -> None:
    with pytest.raises(ApplyFailed) as planned:
        plan(no_trigger_rights, SEED_BADGES)
    with pytest.raises(ApplyFailed) as reconciled:
        apply(no_trigger_rights, SEED_BADGES)
    assert str(planned.value) == str(reconciled.value)
    assert "PostgreSQL refused to create trigger" in str(planned.value)
    assert "permission denied" in str(planned.value)
    assert badged_objects(conn) == (False, {}), "neither left anything behind"


def test_a_successful_plan_leaves_nothing_behind(dsn: str, conn: psycopg.Connection[Any]) -> None:
    outcome = plan(dsn, SEED_BADGES)
    assert not outcome.plan.in_sync and outcome.statements == 0
    assert badged_objects(conn) == (False, {})
    apply(dsn, SEED_BADGES[:1])
    before = badged_objects(conn)
    assert not plan(dsn, SEED_BADGES).plan.in_sync
    assert badged_objects(conn) == before


def test_a_function_whose_query_postgresql_cannot_run_is_refused(dsn: str, conn: psycopg.Connection[Any],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The renderer's own rewriting is checked too: here a (wrong) answer that lower() is an aggregate.

    With it, the shared scan puts FILTER on lower(), which PostgreSQL refuses only when
    the query runs: without the check, the function would install and then skip both
    badges on every insert, silently, inside its guard.
    """
    wrong = Routines(frozenset({("pg_catalog", "lower", RoutineKind.AGGREGATE),
                                ("pg_catalog", "max", RoutineKind.AGGREGATE)}))
    monkeypatch.setattr(badged.reconcile, "read_routines", lambda conn, names: wrong)
    items = [badge("plain", "lower(max(title)) = 'a' from dummy_sketch where user_id = NEW.user_id"),
             badge("lowered", "lower(title) = 'a' from dummy_sketch where user_id = NEW.user_id and id > 0"),
             badge("other", "count(*) > 2 from auth_user")]
    for attempt in (plan, apply):
        with pytest.raises(DatabaseMismatch) as refused:
            attempt(dsn, items)
        (line,) = refused.value.lines()
        assert "badge 'plain, lowered, other'" in line
        assert ("PostgreSQL cannot run the query checking them: FILTER specified, but pg_catalog.lower is not an "
                "aggregate") in line
    assert badged_objects(conn) == (False, {})


def test_a_read_only_session_still_gets_its_plan(dsn: str) -> None:
    """A standby or a read-only role cannot try the plan: it is computed, and a warning says it was not tried."""
    read_only = conninfo.make_conninfo(dsn, options="-c default_transaction_read_only=on")
    outcome = plan(read_only, SEED_BADGES)
    assert outcome.plan.summary == "15 to create, 0 to replace, 0 to drop"
