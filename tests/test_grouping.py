"""One trigger function per table: badges that share it behave exactly as if each had its own.

The function evaluates a table's badges together (one held lookup, one query for
every condition that runs a query, one scan for aggregates over the same rows with
FILTERs). These tests hold it to the simple meaning of each badge on its own: a
model in Python decides after every write who should hold what, and the database
must agree, write by write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from badged.objects import ActualFunction, Catalog, Column, Table
from badged.plan import Action, diff
from badged.render import object_name, render
from badged.settings import Settings
from tests.helpers import ROUTINES, apply, awards, badge, badges_from

Row = tuple[int, int, str]  # (user_id, hit_views, title)
Model = Callable[[list[Row], Row], bool]

#: Each badge with the plain-Python meaning of its condition (rows: every sketch after the insert; new: the insert).
BADGES: list[tuple[dict[str, str], Model]] = [
    (badge("tier1", "count(id) >= 1 from dummy_sketch where user_id = NEW.user_id"),
     lambda rows, new: sum(r[0] == new[0] for r in rows) >= 1),
    (badge("tier2", "count(id) >= 2 from dummy_sketch where user_id = NEW.user_id"),
     lambda rows, new: sum(r[0] == new[0] for r in rows) >= 2),
    (badge("tier3", "count(id) >= 3 from dummy_sketch where user_id = NEW.user_id"),
     lambda rows, new: sum(r[0] == new[0] for r in rows) >= 3),
    (badge("popular2", "count(*) >= 2 from dummy_sketch where user_id = NEW.user_id and hit_views >= 10"),
     lambda rows, new: sum(r[0] == new[0] and r[1] >= 10 for r in rows) >= 2),
    (badge("views25", "sum(hit_views) > 25 from dummy_sketch where user_id = NEW.user_id and title <> 'draft'"),
     lambda rows, new: sum(r[1] for r in rows if r[0] == new[0] and r[2] != "draft") > 25),
    (badge("crowd", "count(*) >= 6 from dummy_sketch"),  # no row in its WHERE: never shared
     lambda rows, new: len(rows) >= 6),
    (badge("named", "exists (select 1 from auth_user where id = NEW.user_id and username = 'ann')"),
     lambda rows, new: new[0] == 1),
    (badge("big", "hit_views >= 50"),
     lambda rows, new: new[1] >= 50),
]

WRITES: list[Row] = [
    (1, 0, "draft"), (2, 10, "a"), (1, 30, "draft"), (2, 12, "b"), (3, 5, "c"), (2, 9, "c"),
    (1, 10, "x"), (3, 60, "d"), (1, 11, "y"), (1, 16, "z"),
]


def test_a_tables_badges_earn_exactly_what_each_would_on_its_own(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO auth_user (id, username) VALUES (1, 'ann'), (2, 'bob'), (3, 'cy')")
    apply(dsn, [item for item, _ in BADGES])
    name = object_name(Settings(), Table("public", "dummy_sketch"), "insert")
    (function,) = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", (name,)).fetchone() or ("",)
    assert function.count("FILTER (WHERE") == 2, "popular2 and views25 ride on the tiers' scan"
    rows: list[Row] = []
    expected: set[tuple[str, str]] = set()
    for write in WRITES:
        conn.execute("INSERT INTO dummy_sketch (user_id, hit_views, title) VALUES (%s, %s, %s)", write)
        rows.append(write)
        expected |= {(item["code"], str(write[0])) for item, model in BADGES if model(rows, write)}
        assert awards(conn) == expected, f"after {write}"


def test_a_failing_condition_skips_only_its_own_badge(dsn: str, conn: psycopg.Connection[Any]) -> None:
    items = [
        badge("tier1", "count(id) >= 1 from dummy_sketch where user_id = NEW.user_id"),
        badge("broken", "count(id) / 0 >= 1 from dummy_sketch where user_id = NEW.user_id"),
        badge("exists", "exists (select 1 from auth_user where id = NEW.user_id)"),
        badge("plain", "hit_views >= 0"),
    ]
    apply(dsn, items)
    conn.execute("INSERT INTO auth_user (id, username) VALUES (1, 'ann')")
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (1)")
    assert awards(conn) == {("tier1", "1"), ("exists", "1"), ("plain", "1")}
    assert notices == ["badged: condition of badge broken failed on public.dummy_sketch: "
                       "division by zero (SQLSTATE 22012)"]


SETTINGS = Settings()
SKETCH = Table("public", "dummy_sketch", 200, "r", (Column("id", "integer"), Column("user_id", "integer"),
                                                    Column("hit_views", "integer"), Column("title", "text")))
TABLES = {"dummy_sketch": SKETCH}


def installed(items: list[dict[str, str]]) -> Catalog:
    from tests.test_plan import installed as as_installed

    return as_installed(render(badges_from(items), TABLES, SETTINGS, ROUTINES))


def test_a_new_badge_on_a_busy_table_replaces_its_function_for_that_badge_only() -> None:
    before = [badge("a", "true"), badge("b", "hit_views > 1")]
    plan = diff(render(badges_from([*before, badge("c", "hit_views > 2")]), TABLES, SETTINGS), installed(before),
                SETTINGS)
    function = next(step for step in plan.steps if step.kind == "function")
    assert (function.action, function.reason, function.badges) == (Action.REPLACE, "new badge c", ("c",))
    assert [step.kind for step in plan.steps] == ["function", "badge"], "the trigger stays as it is"


def test_a_badge_removed_from_a_shared_function_is_named() -> None:
    before = [badge("a", "true"), badge("b", "hit_views > 1")]
    plan = diff(render(badges_from(before[:1]), TABLES, SETTINGS, ROUTINES), installed(before), SETTINGS)
    assert [(s.action, s.kind, s.reason, s.badges) for s in plan.steps] == [
        (Action.REPLACE, "function", "badge removed from badge.json: b", ("b",)),
        (Action.DROP, "badge", "badge removed from badge.json (its awards stay)", ("b",)),
    ]


def test_per_badge_objects_of_earlier_versions_are_replaced_by_the_tables_function() -> None:
    old = ActualFunction(oid=1, schema="badged", name="badged_a", body="BEGIN RETURN NULL; END",
                         security_definer=True, search_path=("pg_catalog", "public", "pg_temp"), language="plpgsql",
                         returns="trigger", nargs=0, comment="managed by badged: badge=a sha256=0")
    catalog = installed([badge("a", "true")])
    plan = diff(render(badges_from([badge("a", "true")]), TABLES, SETTINGS),
                dataclasses.replace(catalog, functions=(*catalog.functions, old)), SETTINGS)
    (step,) = plan.steps
    assert (step.action, step.name, step.badges) == (Action.DROP, "badged.badged_a", ("a",))
    assert step.reason == "its badges are now checked by their table's trigger function"


@pytest.mark.parametrize("table", ["dummy_sketch", "t" * 63])
def test_object_names_fit_postgresql_and_tell_the_table(table: str) -> None:
    name = object_name(SETTINGS, Table("public", table), "update_of")
    assert len(name.encode()) <= 63 and name.endswith("$update_of")
    assert (table in name) == (len(table) < 30)


def test_dropping_a_tables_last_badge_of_a_kind_names_it_on_every_step() -> None:
    before = [badge("a", "true"), badge("gone", "hit_views > 1", event="update")]
    plan = diff(render(badges_from(before[:1]), TABLES, SETTINGS, ROUTINES), installed(before), SETTINGS)
    assert [(s.action, s.kind, s.badges) for s in plan.steps] == [
        (Action.DROP, "badge", ("gone",)), (Action.DROP, "trigger", ("gone",)), (Action.DROP, "function", ("gone",)),
    ]
