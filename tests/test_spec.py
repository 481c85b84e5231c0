"""badge.json validation without a database: every problem named by badge, field and a clear sentence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from badged.condition import ConditionError, Event, parse_condition
from badged.errors import SpecError
from badged.routines import RoutineKind, Routines
from badged.spec import load_badges, parse_badges
from tests.helpers import ROUTINES

SEARCH_PATH = ("pg_catalog", "public", "pg_temp")

SEED_DIR = Path(__file__).resolve().parent.parent / "badged" / "demo_data"
BASE = {"name": "Collector", "code": "collector", "condition": "true", "trigger_condition": "insert",
        "trigger_table": "dummy_sketch", "user_field": "user_id"}


def problems(items: Any, **options: Any) -> list[str]:
    text = items if isinstance(items, str) else json.dumps(items)
    with pytest.raises(SpecError) as raised:
        parse_badges(text, source="badge.json", prefix="badged_", **options)
    return raised.value.lines()


def one(**changes: Any) -> list[dict[str, Any]]:
    return [{**BASE, **changes}]


def test_the_seed_is_valid() -> None:
    badges = load_badges(SEED_DIR / "badge.json", prefix="badged_")
    assert [b.code for b in badges] == ["pionner", "collector", "star"]
    assert [b.event for b in badges] == [Event.UPDATE, Event.INSERT, Event.UPDATE]


def test_the_seeds_verbatim_example_is_a_json_error_with_line_and_column(tmp_path: Path) -> None:
    # the original README's example, with its missing comma after "code": "collector"
    verbatim = tmp_path / "badge.verbatim.json"
    verbatim.write_text('[\n  {\n    "name": "Collector",\n    "code": "collector"\n'
                        '    "condition": "count(id) >= 5 from dummy_sketch where user_id = NEW.user_id"\n  }\n]\n')
    with pytest.raises(SpecError) as raised:
        load_badges(verbatim, prefix="badged_")
    assert raised.value.lines() == [f"{verbatim}: invalid JSON at line 5, column 5: Expecting ',' delimiter"]


@pytest.mark.parametrize("items, expected", [
    ("{}", "badge.json: must be a JSON list of badges, not a JSON object"),
    ([], "badge.json: the list of badges is empty; refusing to drop every badge (pass --allow-empty if that is "
         "really what you want)"),
    (one(trigger_condition="upsert"), "badge.json: badge #0 ('collector'), field 'trigger_condition': must be one "
                                      "of insert, update, delete (got 'upsert')"),
    ([{k: v for k, v in BASE.items() if k != "user_field"}],
     "badge.json: badge #0 ('collector'), field 'user_field': is required"),
    ([BASE, BASE], "badge.json: badge #1 ('collector'), field 'code': duplicate code, also used by badge #0"),
])
def test_each_problem_names_the_badge_and_the_field(items: Any, expected: str) -> None:
    assert expected in problems(items)


def test_an_unknown_field_suggests_the_one_meant() -> None:
    misspelt = {**{k: v for k, v in BASE.items() if k != "trigger_table"}, "trigger_tabel": "dummy_sketch"}
    assert ("badge.json: badge #0 ('collector'), field 'trigger_tabel': unknown field; did you mean 'trigger_table'?"
            in problems([misspelt]))


def test_a_code_too_long_for_a_postgresql_name_once_prefixed() -> None:
    (line,) = problems(one(code="x" * 60))
    assert "field 'code': makes the PostgreSQL name" in line and "names hold at most 63 bytes" in line


def test_an_empty_list_is_accepted_when_asked_for() -> None:
    assert parse_badges("[]", source="badge.json", prefix="badged_", allow_empty=True) == ()


def test_every_problem_is_reported_at_once() -> None:
    lines = problems([{**BASE, "trigger_condition": "upsert"}, {**BASE, "code": "b", "condition": "true; false"}])
    assert [line.split(":")[1].strip() for line in lines] == ["badge #0 ('collector'), field 'trigger_condition'",
                                                              "badge #1 ('b'), field 'condition'"]


@pytest.mark.parametrize("condition, event, message", [
    ("true; drop table auth_user", "insert", "not several statements (found ';')"),
    ("true union select false", "insert", "UNION, INTERSECT and EXCEPT are not allowed"),
    ("exists (with d as (delete from auth_user returning 1) select 1 from d)", "insert",
     "must not contain INSERT, UPDATE, DELETE or MERGE"),
    ("NEW.hit_views > 1", "delete", "reads NEW, which is NULL on delete; use OLD instead"),
    ("OLD.hit_views > 1", "insert", "reads OLD, which is NULL on insert; use NEW instead"),
    ("count(( from", "insert", "is not valid SQL"),
    ("", "insert", ""),
])
def test_conditions_are_one_safe_expression_checked_by_postgresqls_parser(condition: str, event: str,
                                                                          message: str) -> None:
    (line,) = problems(one(condition=condition, trigger_condition=event))
    assert "field 'condition'" in line and message in line


def test_what_runs_is_deparsed_from_the_checked_tree_never_the_text() -> None:
    condition = parse_condition("hit_views > 1000 -- ; drop table auth_user", Event.UPDATE)
    assert condition.expression == "new.hit_views > 1000"
    with pytest.raises(ConditionError):
        parse_condition("true; drop table auth_user", Event.INSERT)


@pytest.mark.parametrize("written, event, expression", [
    ("age(NEW.date_joined) > interval '1 year'", Event.UPDATE, "age(new.date_joined) > CAST('1 year' AS interval)"),
    ("count(id) >= 5 from dummy_sketch where user_id = NEW.user_id", Event.INSERT,
     "(SELECT count(id) >= 5 FROM dummy_sketch WHERE user_id = new.user_id)"),
    ("hit_views > 1000", Event.UPDATE, "new.hit_views > 1000"),
    ("hit_views > 1000", Event.DELETE, "old.hit_views > 1000"),
])
def test_the_three_shapes(written: str, event: Event, expression: str) -> None:
    assert parse_condition(written, event).expression == expression


def test_only_row_conditions_without_clock_or_queries_can_skip_unrelated_updates() -> None:
    assert parse_condition("hit_views > 1000", Event.UPDATE).new_row_only
    assert not parse_condition("age(NEW.date_joined) > interval '1 year'", Event.UPDATE).new_row_only
    assert not parse_condition("NEW.created > 'now'::timestamptz", Event.UPDATE).new_row_only
    assert not parse_condition("count(*) > 1 from dummy_sketch where user_id = NEW.user_id", Event.UPDATE).new_row_only


@pytest.mark.parametrize("written, key", [
    ("count(id) >= 5 from dummy_sketch where user_id = NEW.user_id",
     ("SELECT FROM dummy_sketch", ("user_id = new.user_id",))),
    ("sum(v) > 1 from t where user_id = NEW.user_id and v > 2", ("SELECT FROM t", ("user_id = new.user_id",))),
    ("count(*) > 100 from dummy_sketch", None),  # reads no row: a shared scan could only be wider
    ("true from dummy_sketch where user_id = NEW.user_id", None),  # not an aggregate: rows, not one value
    ("count(*) > 1 from t where user_id = NEW.user_id group by x", None),
    ("sum(v) over () > 1 from t where user_id = NEW.user_id", None),
    # which names are aggregates is the database's answer (pg_proc.prokind), not a list's
    ("percentile_disc(0.5) within group (order by v) >= 100 from t where user_id = NEW.user_id",
     ("SELECT FROM t", ("user_id = new.user_id",))),
    ("count(*) >= 1 and mode() within group (order by k) = 'x' from t where user_id = NEW.user_id and k = 'x'",
     ("SELECT FROM t", ("user_id = new.user_id",))),
    ("my_agg(v) > 1 from t where user_id = NEW.user_id", None),  # unknown to the database: don't guess
    ("lower(max(k)) = 'x' from t where user_id = NEW.user_id", ("SELECT FROM t", ("user_id = new.user_id",))),
    ("lower(k) = 'x' from t where user_id = NEW.user_id", None),  # a plain function: rows, not one value
    ("row_number() > 1 from t where user_id = NEW.user_id", None),  # a window function
])
def test_which_conditions_may_share_one_scan(written: str, key: Any) -> None:
    assert parse_condition(written, Event.INSERT).share_key(ROUTINES, SEARCH_PATH) == key


def test_a_name_that_is_an_aggregate_in_one_schema_and_a_function_in_another_is_not_shared() -> None:
    ambiguous = Routines(ROUTINES.found | {("public", "count", RoutineKind.FUNCTION)})
    condition = parse_condition("count(*) >= 1 from t where user_id = NEW.user_id", Event.INSERT)
    assert condition.share_key(ambiguous, SEARCH_PATH) is None
    assert condition.share_key(ambiguous, ("pg_catalog", "other", "pg_temp")) is not None


@pytest.mark.parametrize("written, event, table, columns", [
    ("count(id) >= 5 from dummy_sketch where user_id = NEW.user_id", Event.INSERT, (None, "dummy_sketch"),
     {"user_id"}),
    ("count(*) >= 5 from public.dummy_sketch s where s.user_id = NEW.user_id and NEW.kind = kind", Event.INSERT,
     ("public", "dummy_sketch"), {"user_id", "kind"}),
    ("count(*) >= 5 from dummy_sketch where OLD.user_id = user_id", Event.DELETE, (None, "dummy_sketch"), {"user_id"}),
    ("count(*) >= 5 from dummy_sketch where owner_id = NEW.user_id", Event.INSERT, (None, "dummy_sketch"), set()),
    ("count(*) >= 5 from dummy_sketch where user_id = NEW.user_id or true", Event.INSERT, (None, "dummy_sketch"),
     set()),
    ("count(*) >= 5 from a join b on a.id = b.id where a.user_id = NEW.user_id", Event.INSERT, None, set()),
])
def test_the_rows_a_query_tail_reads_are_known_when_its_where_fixes_a_column_to_the_rows(
        written: str, event: Event, table: Any, columns: set[str]) -> None:
    condition = parse_condition(written, event)
    assert (condition.from_table, condition.scope_columns) == (table, frozenset(columns))


@pytest.mark.parametrize("written, row_local", [
    ("hit_views > 1000", True),
    ("NEW.views > OLD.views + 5", True),
    ("case when kind = 'x' then views > 10 else views > 100 end", True),
    ("age(NEW.date_joined) > interval '1 year'", False),  # a function call: the database says what it reads
    ("exists (select 1 from auth_user where id = NEW.user_id)", False),
    ("count(*) > 1 from dummy_sketch where user_id = NEW.user_id", False),
])
def test_conditions_that_read_only_the_changed_row(written: str, row_local: bool) -> None:
    assert parse_condition(written, Event.UPDATE).row_local is row_local
