"""Every valid condition installs and means what it says, including where PostgreSQL decides the meaning.

Each test here failed on badged before the fix it names (issue 10): a CASE at the top
of a condition, aggregates outside a fixed list, update badges on columns without an
``=`` operator, and the documented semantics of update checks, multi-row statements,
partition moves and virtual generated columns.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from badged.errors import DatabaseMismatch
from tests.helpers import apply, awards, badge, plan

POSTS = """
CREATE TABLE posts (id int PRIMARY KEY, user_id int, views int NOT NULL DEFAULT 0, kind text,
                    meta json, location point, title text NOT NULL DEFAULT '');
"""


def post_badge(code: str, condition: str, event: str = "insert") -> dict[str, str]:
    return badge(code, condition, event=event, table="posts")


@pytest.fixture
def posts(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(POSTS)
    return conn


@pytest.mark.parametrize("condition, awarded", [
    ("case when kind = 'x' then views > 10 else views > 100 end", {"1", "3"}),
    ("not (case when kind = 'x' then views > 10 else views > 100 end)", {"2", "4"}),
    ("CASE WHEN NEW.kind = 'x' THEN NEW.views > 10 END", {"1"}),
])
def test_a_condition_that_starts_with_case_installs_and_means_what_it_says(
        dsn: str, posts: psycopg.Connection[Any], condition: str, awarded: set[str]) -> None:
    """plpgsql reads an IF condition up to its first THEN: conditions are parenthesised."""
    apply(dsn, [post_badge("cased", condition)])
    posts.execute("INSERT INTO posts (id, user_id, views, kind) VALUES (1, 1, 11, 'x'), (2, 2, 11, 'y'), "
                  "(3, 3, 101, 'y'), (4, 4, 5, 'x')")
    assert {user for _, user in awards(posts)} == awarded


def test_aggregates_the_database_knows_get_their_filter_in_a_shared_scan(dsn: str, posts: psycopg.Connection[Any]
                                                                        ) -> None:
    """percentile_disc is an aggregate because pg_proc says so: computed over the 'x' posts only."""
    apply(dsn, [
        post_badge("any_post", "count(*) >= 1 from posts where user_id = NEW.user_id"),
        post_badge("median_x", "count(*) >= 1 and percentile_disc(0.5) within group (order by views) >= 100 "
                               "from posts where user_id = NEW.user_id and kind = 'x'"),
    ])
    (body,) = posts.execute("SELECT prosrc FROM pg_proc WHERE proname = 'badged_public$posts$insert'").fetchone() \
        or ("",)
    assert "percentile_disc(0.5) WITHIN GROUP (ORDER BY views) FILTER (WHERE kind = 'x')" in body, \
        "the two conditions share one scan, and the median is filtered like the count"
    posts.execute("INSERT INTO posts (id, user_id, views, kind) VALUES (1, 7, 1000, 'y'), (2, 7, 1000, 'y'), "
                  "(3, 7, 1, 'x')")
    assert awards(posts) == {("any_post", "7")}, "the median of user 7's 'x' posts is 1"
    posts.execute("INSERT INTO posts (id, user_id, views, kind) VALUES (4, 7, 500, 'x'), (5, 7, 500, 'x')")
    assert awards(posts) == {("any_post", "7"), ("median_x", "7")}


def test_user_defined_and_ordered_set_aggregates_in_a_filtered_family(dsn: str, posts: psycopg.Connection[Any]
                                                                     ) -> None:
    posts.execute("CREATE AGGREGATE my_sum(int) (sfunc = int4pl, stype = int)")
    apply(dsn, [
        post_badge("tier1", "count(*) >= 1 from posts where user_id = NEW.user_id"),
        post_badge("mine", "my_sum(views) >= 10 from posts where user_id = NEW.user_id and kind = 'x'"),
        post_badge("modal", "mode() within group (order by kind) = 'x' from posts where user_id = NEW.user_id "
                            "and views > 0"),
        post_badge("regr", "regr_count(views, id) >= 4 from posts where user_id = NEW.user_id and kind = 'x'"),
    ])
    (body,) = posts.execute("SELECT prosrc FROM pg_proc WHERE proname = 'badged_public$posts$insert'").fetchone() \
        or ("",)
    assert "my_sum(views) FILTER (WHERE kind = 'x') >= 10" in body and "regr_count(views, id) FILTER" in body, \
        "one scan computes all four, each aggregate filtered to its own rows"
    posts.execute("INSERT INTO posts (id, user_id, views, kind) VALUES (1, 1, 9, 'y'), (2, 1, 9, 'y'), "
                  "(3, 1, 0, 'x'), (4, 1, 0, 'x'), (5, 1, 0, 'x')")
    assert awards(posts) == {("tier1", "1")}, "only the 'x' posts count for my_sum and regr_count"
    posts.execute("INSERT INTO posts (id, user_id, views, kind) VALUES (6, 1, 10, 'x')")
    assert awards(posts) == {("tier1", "1"), ("mine", "1"), ("regr", "1")}


@pytest.mark.parametrize("condition, change", [
    ("NEW.meta->>'k' = 'v'", "meta = '{\"k\": \"v\"}'"),
    ("location is not null", "location = '(1,2)'"),
    ("NEW.location[0] > 0", "location = '(1,2)'"),
])
def test_update_badges_on_columns_without_an_equality_operator_install(
        dsn: str, posts: psycopg.Connection[Any], condition: str, change: str) -> None:
    """json and point have no '=': the trigger compares stored values (record_image_ne) instead."""
    apply(dsn, [post_badge("changed", condition, event="update")])
    posts.execute("INSERT INTO posts (id, user_id) VALUES (1, 1)")
    posts.execute("UPDATE posts SET title = 'other'")
    assert awards(posts) == set()
    posts.execute(f"UPDATE posts SET {change}")
    assert awards(posts) == {("changed", "1")}


def test_an_update_badge_is_checked_only_when_a_column_it_reads_changes(dsn: str, posts: psycopg.Connection[Any]
                                                                       ) -> None:
    """Unlike the original django-pg-badges, which checked update badges on every update."""
    posts.execute("INSERT INTO posts (id, user_id, views) VALUES (1, 1, 2000)")
    apply(dsn, [post_badge("star", "views > 1000", event="update")])
    posts.execute("UPDATE posts SET title = 'renamed'")
    posts.execute("UPDATE posts SET views = views")  # set, but to the same value
    assert awards(posts) == set(), "the row qualified before the badge existed, but views did not change"
    posts.execute("UPDATE posts SET views = views + 1")
    assert awards(posts) == {("star", "1")}


def test_every_row_of_a_statement_is_checked_against_the_whole_statement(dsn: str, posts: psycopg.Connection[Any]
                                                                        ) -> None:
    """AFTER ROW triggers run after the statement: the first row's check already sees the rows after it."""
    apply(dsn, [post_badge("followed", "count(*) >= 2 from posts where user_id = NEW.user_id and id > NEW.id")])
    posts.execute("INSERT INTO posts (id, user_id) VALUES (1, 1), (2, 1), (3, 1)")
    assert awards(posts) == {("followed", "1")}, "only row 1 has two rows after it, and they came in its statement"


def test_moving_a_row_between_partitions_is_a_delete_and_an_insert(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE entries (user_id int, kind text, views int) PARTITION BY LIST (kind)")
    conn.execute("CREATE TABLE entries_a PARTITION OF entries FOR VALUES IN ('a')")
    conn.execute("CREATE TABLE entries_b PARTITION OF entries FOR VALUES IN ('b')")

    def entry_badge(code: str, condition: str, event: str) -> dict[str, str]:
        return badge(code, condition, event=event, table="entries")

    apply(dsn, [entry_badge("inserted", "true", "insert"), entry_badge("updated", "true", "update"),
                entry_badge("deleted", "true", "delete")])
    conn.execute("INSERT INTO entries VALUES (1, 'a', 0)")
    conn.execute("UPDATE entries SET kind = 'b' WHERE user_id = 1")  # moves the row to entries_b
    conn.execute("INSERT INTO entries VALUES (2, 'a', 0)")
    conn.execute("UPDATE entries SET views = 1 WHERE user_id = 2")  # stays in entries_a
    assert awards(conn) == {("inserted", "1"), ("deleted", "1"), ("inserted", "2"), ("updated", "2")}


VIRTUAL = "CREATE TABLE scores (id int PRIMARY KEY, user_id int, points int, double int GENERATED ALWAYS AS " \
          "(points * 2) VIRTUAL, shown int GENERATED ALWAYS AS (user_id) VIRTUAL)"


@pytest.mark.parametrize("condition, user_field, message", [
    ("double > 10", "user_id", "reads NEW.double, a virtual generated column of public.scores"),
    ("NEW.points > 1 and OLD.double < 3", "user_id", "reads OLD.double, a virtual generated column"),
    ("row_to_json(NEW)::text <> ''", "user_id", "reads the whole changed row, and public.scores has virtual"),
    ("points > 10", "shown", "user_field 'shown' is a virtual generated column of public.scores"),
])
def test_conditions_reading_virtual_generated_columns_are_refused(
        dsn: str, conn: psycopg.Connection[Any], server_version: int, condition: str, user_field: str,
        message: str) -> None:
    """PostgreSQL 18 passes virtual generated columns to row triggers as NULL: such a badge could never be earned."""
    if server_version < 180000:
        pytest.skip("virtual generated columns arrived in PostgreSQL 18")
    conn.execute(VIRTUAL)
    item = badge("doubled", condition, event="update", table="scores", user_field=user_field)
    with pytest.raises(DatabaseMismatch) as refused:
        plan(dsn, [item])
    (line,) = refused.value.lines()
    assert "badge #0 ('doubled')" in line and message in line and "make the column STORED" in line
    assert apply(dsn, [badge("stored_ok", "points > 10", event="update", table="scores")]).applied, \
        "a table with virtual columns is fine as long as the condition does not read them"
