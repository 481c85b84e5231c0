"""badged's ``award_user`` view: awards with the user's id also as bigint and uuid, indexed, for joins."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from badged.plan import Cause, ObjectKind
from tests.conftest import SEED_BADGES
from tests.helpers import apply, plan


def test_the_view_types_the_user_and_its_joins_use_the_indexes(conn: psycopg.Connection[Any], dsn: str) -> None:
    apply(dsn, SEED_BADGES)
    some_uuid = str(uuid.uuid4())
    conn.execute("INSERT INTO badged.award (badge, user_id) VALUES ('star', '42'), ('star', %s), ('star', 'ann'),"
                 " ('star', '123456789012345678901234')", (some_uuid,))
    rows = conn.execute("SELECT user_key, user_integer, user_uuid::text FROM badged.award_user ORDER BY id").fetchall()
    assert rows == [("42", 42, None), (some_uuid, None, some_uuid), ("ann", None, None),
                    ("123456789012345678901234", None, None)]  # too long for a bigint: no cast error, NULL
    conn.execute("SET enable_seqscan = off")
    for column, value in (("user_integer", 42), ("user_uuid", some_uuid)):
        shown = "\n".join(row[0] for row in conn.execute(
            f"EXPLAIN SELECT * FROM auth_user u JOIN badged.award_user a ON a.{column} = %s", (value,)).fetchall())
        assert f"award_user_{column.removeprefix('user_')}" in shown, shown


def test_an_install_from_before_the_view_gets_it(conn: psycopg.Connection[Any], dsn: str) -> None:
    apply(dsn, SEED_BADGES)
    conn.execute("DROP VIEW badged.award_user; DROP INDEX badged.award_user_integer, badged.award_user_uuid")
    (step,) = plan(dsn, SEED_BADGES).plan.steps
    assert (step.kind, step.cause, step.name) == (ObjectKind.VIEW, Cause.SETUP, "badged.award_user")
    apply(dsn, SEED_BADGES)
    assert plan(dsn, SEED_BADGES).plan.in_sync
    assert conn.execute("SELECT to_regclass('badged.award_user') IS NOT NULL").fetchone() == (True,)
