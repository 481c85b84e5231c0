"""``badged status``: per badge in sync / drifted / missing / pending / removed, with award counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import SEED_BADGES
from tests.helpers import apply, badge


def status(cli: Any, dsn: str, path: Path, *extra: str) -> tuple[int, str]:
    code, out, _err = cli("status", "--badges", str(path), "--dsn", dsn, *extra)
    return code, out


def status_json(cli: Any, dsn: str, path: Path) -> tuple[int, dict[str, Any]]:
    code, out = status(cli, dsn, path, "--output", "json")
    return code, json.loads(out)


def by_code(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["code"]: entry for entry in report["badges"]}


def test_everything_in_sync_exits_0_with_award_counts(dsn: str, conn: psycopg.Connection[Any], write_badges: Any,
                                                      cli: Any) -> None:
    path = write_badges(SEED_BADGES)
    apply(dsn, SEED_BADGES)
    conn.execute("INSERT INTO auth_user (username) VALUES ('ada')")
    conn.execute("INSERT INTO dummy_sketch (user_id, title) SELECT 1, 'sketch' FROM generate_series(1, 5)")
    code, report = status_json(cli, dsn, path)
    assert code == 0
    assert report["in_sync"] is True
    badges = by_code(report)
    assert [entry["status"] for entry in badges.values()] == ["in sync"] * 3
    assert badges["collector"]["awards"] == 1 and badges["collector"]["last_award"] is not None
    assert badges["collector"]["table"] == "dummy_sketch" and badges["collector"]["event"] == "insert"
    assert badges["star"]["awards"] == 0 and badges["star"]["last_award"] is None
    code, text = status(cli, dsn, path)
    assert code == 0
    assert text.splitlines()[0].split() == ["BADGE", "STATUS", "TABLE", "ON", "AWARDS", "LAST", "AWARD"]
    assert any(line.split()[:5] == ["collector", "in", "sync", "dummy_sketch", "insert"] for line in text.splitlines())


def test_drift_missing_pending_and_removed_are_told_apart(dsn: str, conn: psycopg.Connection[Any],
                                                          write_badges: Any,
                                                          cli: Any) -> None:
    old = [*SEED_BADGES, badge("gone", "true")]
    apply(dsn, old)
    conn.execute("DROP TRIGGER badged_public$auth_user$update ON auth_user")
    conn.execute("CREATE OR REPLACE FUNCTION badged.badged_public$dummy_sketch$update_of() RETURNS trigger "
                 "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp "
                 "AS $$ BEGIN RETURN NULL; END $$")
    path = write_badges([*SEED_BADGES, badge("fresh", "true")])
    code, report = status_json(cli, dsn, path)
    assert code == 2, "anything not in sync exits non-zero (usable as a probe or a CI gate)"
    assert report["in_sync"] is False
    states = {code: entry["status"] for code, entry in by_code(report).items()}
    assert states == {"pionner": "missing", "star": "drifted", "collector": "in sync", "fresh": "pending",
                      "gone": "removed"}
    assert any("edited by hand" in reason for reason in by_code(report)["star"]["reasons"])
    code, text = status(cli, dsn, path)
    assert code == 2
    assert ("pionner: + trigger badged_public$auth_user$update on public.auth_user: missing: dropped outside badged"
            in text)


def test_before_the_first_reconcile_every_badge_is_pending(dsn: str, write_badges: Any,
                                                           cli: Any) -> None:
    code, report = status_json(cli, dsn, write_badges(SEED_BADGES))
    assert code == 2
    assert {entry["status"] for entry in report["badges"]} == {"pending"}
    assert all(entry["awards"] == 0 for entry in report["badges"])


def test_a_table_missing_from_the_database_is_a_clear_error(dsn: str, write_badges: Any,
                                                            cli: Any) -> None:
    path = write_badges([badge("ghost", "true", table="no_such_table")])
    code, _out, err = cli("status", "--badges", str(path), "--dsn", dsn)
    assert code == 1
    assert "badge #0 ('ghost'), field 'trigger_table': table no_such_table does not exist" in err
    assert "Traceback" not in err
