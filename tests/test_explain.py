"""``badged explain --user U``: each badge held or not, its condition evaluated for U, term by term."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from badged.db import connect
from badged.errors import ConfigError
from badged.explain import explain_user
from badged.explain_terms import Explanation, explanation_text
from badged.settings import Settings
from tests.conftest import SEED_BADGES
from tests.helpers import apply, badge, badges_from

SETTINGS = Settings()


def explain(dsn: str, items: list[dict[str, str]], user: str, *only: str) -> dict[str, Explanation]:
    with connect(dsn, SETTINGS) as conn:
        return {e.badge: e for e in explain_user(conn, badges_from(items), SETTINGS, user, only=only)}


def seed_data(conn: psycopg.Connection[Any]) -> None:
    conn.execute("""
        INSERT INTO auth_user (id, username, date_joined) VALUES (1, 'ann', now() - interval '2 years'),
                                                                 (2, 'bob', now());
        INSERT INTO dummy_sketch (user_id, hit_views) VALUES (2, 10), (2, 2000), (2, 5);
        UPDATE dummy_sketch SET hit_views = 3000 WHERE hit_views = 2000;
    """)


def test_each_condition_shape_term_by_term(conn: psycopg.Connection[Any], dsn: str) -> None:
    apply(dsn, SEED_BADGES)
    seed_data(conn)
    found = explain(dsn, SEED_BADGES, "2")

    collector = found["collector"]
    assert (collector.held_since, collector.value, collector.trigger) == (None, False, "insert of public.dummy_sketch")
    ((term),) = collector.terms
    assert (term.term.text, term.left, term.right, term.whole) == ("count(id) >= 5", 3, 5, False)
    assert collector.row == "NEW = user 2's most recent row of public.dummy_sketch"

    star = found["star"]  # held: earned by another row than the most recent one, which the answer names
    assert star.held_since is not None and star.value is False
    assert star.trigger == "update of hit_views on public.dummy_sketch, when one of them changes"
    assert [(t.term.text, t.left, t.right, t.whole) for t in star.terms] == [("new.hit_views > 1000", 5, 1000, False)]

    pionner = found["pionner"]  # an expression over NEW, with a function: values as PostgreSQL prints them
    assert pionner.trigger == "every update of public.auth_user"
    assert pionner.row.startswith("NEW and OLD = user 2's most recent row of public.auth_user")  # NULL last_login
    assert pionner.terms[0].right == "1 year" and pionner.terms[0].whole is False

    text = explanation_text(list(found.values()))
    assert "    count(id) >= 5: 3 >= 5 → false" in text
    assert "star (Star) for user 2: held since " in text


def test_a_user_without_rows_and_a_condition_that_would_award_now(conn: psycopg.Connection[Any], dsn: str) -> None:
    """No row of ann in dummy_sketch: NEW is a row with only her user_id; Pionner holds for her, unawarded."""
    apply(dsn, SEED_BADGES)
    seed_data(conn)
    found = explain(dsn, SEED_BADGES, "1", "collector", "pionner")
    assert set(found) == {"collector", "pionner"}
    assert found["collector"].row == ("NEW = a row of public.dummy_sketch with only user_id = '1' "
                                      "(user 1 has none)")
    assert found["collector"].terms[0].left == 0
    assert found["pionner"].value is True and found["pionner"].held_since is None
    assert "value: true (a check now would award it)" in explanation_text([found["pionner"]])


def test_nulls_and_a_failing_condition(conn: psycopg.Connection[Any], dsn: str) -> None:
    items = [badge("recent", "NEW.last_login > now() - interval '1 day'", event="update", table="auth_user",
                   user_field="id"),
             badge("odd", "100 / (NEW.hit_views - 5) > 1 and NEW.hit_views < 10", event="update")]
    apply(dsn, items)
    seed_data(conn)
    recent = explain(dsn, items, "1", "recent")["recent"]
    assert recent.value is None and recent.terms[0].left is None and recent.terms[0].whole is None
    assert "new.last_login > now() - CAST('1 day' AS interval): NULL > '" in explanation_text([recent])
    odd = explain(dsn, items, "2", "odd")["odd"]  # bob's most recent sketch has 5 views
    assert odd.error == "division by zero"
    assert odd.terms[0].error == "division by zero"
    assert (odd.terms[1].left, odd.terms[1].whole) == (5, True)  # the other term still answers
    assert "  error: division by zero" in explanation_text([odd])


def test_unknown_badges_are_named_and_nothing_is_written(conn: psycopg.Connection[Any], dsn: str) -> None:
    """Read-only: a condition calling a function that writes (allowed as VOLATILE) cannot write through it."""
    conn.execute("""
        CREATE TABLE bumps (n integer);
        CREATE FUNCTION bump() RETURNS boolean LANGUAGE sql VOLATILE AS 'INSERT INTO bumps VALUES (1) RETURNING true';
    """)
    settings = Settings(allow_volatile=frozenset({"bump"}))
    items = [badge("bumped", "bump()", event="update", table="auth_user", user_field="id")]
    apply(dsn, items, settings)
    conn.execute("INSERT INTO auth_user (id, username) VALUES (1, 'ann')")
    conn.execute("DELETE FROM bumps")
    with connect(dsn, settings) as own:
        with pytest.raises(ConfigError, match=r"badge\.json has no badge 'colector'"):
            explain_user(own, badges_from(items, settings), settings, "1", only=["colector"])
        (found,) = explain_user(own, badges_from(items, settings), settings, "1")
    assert found.error is not None and "read-only transaction" in found.error
    assert conn.execute("SELECT count(*) FROM bumps").fetchone() == (0,)


def test_the_command_line(cli: Any, conn: psycopg.Connection[Any], dsn: str, write_badges: Any) -> None:
    apply(dsn, SEED_BADGES)
    seed_data(conn)
    path = str(write_badges(SEED_BADGES))
    code, out, err = cli("explain", "--user", "2", "--badge", "collector", "--badges", path, "--dsn", dsn,
                         "--output", "json")
    assert code == 0, err
    (item,) = json.loads(out)
    assert (item["badge"], item["held"], item["terms"][0]["left"], item["terms"][0]["value"]) == (
        "collector", False, 3, False)
    code, out, err = cli("explain", "--user", "2", "--badges", path, "--dsn", dsn)
    assert code == 0 and "collector (Collector) for user 2: not held" in out


def test_operators_literals_and_sides_computed_once(conn: psycopg.Connection[Any], dsn: str) -> None:
    """A "%" in a condition, a text literal, and query-shape sides that read no row of the query."""
    items = [badge("even", "NEW.hit_views % 2 = 0 and NEW.title like 's%'", event="update"),
             badge("named", "NEW.title = 'five'", event="update"),
             badge("five", "count(id) >= abs(-5) and count(id) >= length(NEW.title) "
                           "from dummy_sketch where user_id = NEW.user_id")]
    apply(dsn, items)
    seed_data(conn)
    conn.execute("UPDATE dummy_sketch SET title = 'sx' WHERE hit_views = 10")
    conn.execute("UPDATE dummy_sketch SET title = 'five' WHERE hit_views = 5")
    found = explain(dsn, items, "2")
    assert [(t.term.text, t.left, t.right, t.whole) for t in found["even"].terms] == [
        ("new.hit_views % 2 = 0", 1, 0, False)]  # LIKE is no comparison term: the value still says it all
    assert found["even"].value is False
    assert [(t.left, t.right, t.whole) for t in found["named"].terms] == [("five", "five", True)]
    assert [(t.left, t.right, t.whole, t.error) for t in found["five"].terms] == [
        (3, 5, False, None), (3, 4, False, None)]  # not a subquery per row: one value each
    assert found["named"].row == ("NEW and OLD = user 2's most recent row of public.dummy_sketch (both the same "
                                  "row: a comparison of OLD with NEW reads no change here)")
