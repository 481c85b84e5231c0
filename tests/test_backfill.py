"""``badged backfill``: users who already qualify get their badges, once, with the same events as live awards."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.conftest import SEED_BADGES
from tests.helpers import apply, awards, badge


@pytest.fixture
def existing_data(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Rows written before any badge existed: ada has 6 sketches (one a star), bob 2, cy none."""
    conn.execute("INSERT INTO auth_user (id, username, date_joined) VALUES "
                 "(1, 'ada', now() - interval '2 years'), (2, 'bob', now()), (3, 'cy', now())")
    conn.execute("INSERT INTO dummy_sketch (user_id, hit_views) SELECT 1, 10 FROM generate_series(1, 5)")
    conn.execute("INSERT INTO dummy_sketch (user_id, hit_views) VALUES (1, 5000), (2, 3), (2, 4)")
    return conn


def backfill(cli: Any, dsn: str, path: Any, *extra: str) -> tuple[int, str, str]:
    return cli("backfill", "--badges", str(path), "--dsn", dsn, *extra)


def test_backfill_awards_exactly_the_users_who_qualify_and_notifies_each(
        dsn: str, existing_data: psycopg.Connection[Any], write_badges: Any,
        cli: Any) -> None:
    path = write_badges(SEED_BADGES)
    apply(dsn, SEED_BADGES)
    assert awards(existing_data) == set(), "triggers see only future writes"
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN badge_earned")
        code, out, _ = backfill(cli, dsn, path, "--batch-size", "3")
        assert code == 0
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=3)]
    expected = {("collector", "1"), ("star", "1"), ("pionner", "1")}
    assert awards(existing_data) == expected
    assert {(n["badge"], n["user_id"]) for n in notes} == expected
    ids = {row[0] for row in existing_data.execute("SELECT id FROM badged.award").fetchall()}
    assert {n["award_id"] for n in notes} == ids
    assert "collector: awarded 1 (of 8 rows)" in out
    assert "pionner: awarded 1 (of 3 rows)" in out


def test_a_rerun_awards_nothing_twice(dsn: str, existing_data: psycopg.Connection[Any], write_badges: Any,
                                      cli: Any) -> None:
    path = write_badges(SEED_BADGES)
    apply(dsn, SEED_BADGES)
    assert backfill(cli, dsn, path)[0] == 0
    first = existing_data.execute("SELECT id, badge, user_id, awarded_at FROM badged.award ORDER BY id").fetchall()
    code, out, _ = backfill(cli, dsn, path)
    assert code == 0
    assert existing_data.execute("SELECT id, badge, user_id, awarded_at FROM badged.award ORDER BY id").fetchall() \
        == first
    assert "collector: awarded 0" in out


def test_dry_run_counts_and_changes_nothing(dsn: str, existing_data: psycopg.Connection[Any], write_badges: Any,
                                            cli: Any) -> None:
    path = write_badges(SEED_BADGES)
    apply(dsn, SEED_BADGES)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN badge_earned")
        code, out, _ = backfill(cli, dsn, path, "--dry-run")
        assert code == 0
        assert list(listener.notifies(timeout=0.3)) == [], "a dry run sends no events"
    assert awards(existing_data) == set()
    assert "collector: would award 1 (of 8 rows)" in out


def test_only_the_named_badge_and_never_a_delete_badge(dsn: str, existing_data: psycopg.Connection[Any],
                                                        write_badges: Any,
                                                        cli: Any) -> None:
    items = [*SEED_BADGES, badge("quitter", "true", event="delete")]
    path = write_badges(items)
    apply(dsn, items)
    assert backfill(cli, dsn, path, "--badge", "star")[0] == 0
    assert awards(existing_data) == {("star", "1")}
    code, out, _ = backfill(cli, dsn, path, "--badge", "quitter")
    assert code == 0
    assert "quitter: skipped: a delete badge cannot be backfilled" in out
    code, _, err = backfill(cli, dsn, path, "--badge", "nope")
    assert code == 1
    assert "--badge nope: no such badge" in err


def test_rows_where_the_condition_fails_are_counted_and_skipped(dsn: str, existing_data: psycopg.Connection[Any],
                                                                 write_badges: Any,
                                                                 cli: Any) -> None:
    # 100 / (hit_views - 3) divides by zero on bob's first sketch only; bob's other sketch qualifies
    items = [badge("ratio", "100 / (hit_views - 3) > 0")]
    path = write_badges(items)
    apply(dsn, items)
    code, out, _ = backfill(cli, dsn, path, "--batch-size", "100")
    assert code == 0
    assert awards(existing_data) == {("ratio", "1"), ("ratio", "2")}
    assert "ratio: awarded 2 (of 8 rows, condition failed on 1 rows)" in out


def test_backfill_before_the_first_reconcile_is_refused_clearly(dsn: str, write_badges: Any,
                                                                 cli: Any) -> None:
    code, _, err = backfill(cli, dsn, write_badges(SEED_BADGES))
    assert code == 1
    assert "run `badged reconcile --once` first" in err
