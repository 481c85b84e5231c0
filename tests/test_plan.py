"""Rendering and diffing without a database: tables of cases and a stored rendering of the seed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from badged.objects import (
    TRIGGER_EVENT_BITS,
    TRIGGER_ROW,
    ActualBadgeRow,
    ActualFunction,
    ActualTrigger,
    Catalog,
    Column,
    Desired,
    FunctionDef,
    Table,
    TriggerDef,
)
from badged.output import plan_json, plan_text
from badged.own_schema import AWARD_USER_VIEW, OWN_TABLES
from badged.plan import Action, diff
from badged.render import render
from badged.settings import Settings
from badged.spec import Badge
from tests.conftest import SEED_BADGES
from tests.helpers import ROUTINES, badge, badges_from, qualified

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = Settings()
TABLES = {
    "auth_user": Table("public", "auth_user", 100, "r", (
        Column("id", "integer"), Column("username", "character varying(150)"), Column("last_login", "timestamptz"),
        Column("date_joined", "timestamp with time zone"),
    )),
    "dummy_sketch": Table("public", "dummy_sketch", 200, "r", (
        Column("id", "integer"), Column("user_id", "integer"), Column("title", "character varying(200)"),
        Column("hit_views", "integer"), Column("score", "integer", generated=True),
    )),
}
EMPTY = Catalog(schema_exists=False, tables=frozenset(), functions=(), triggers=(), foreign_triggers=(),
                badge_rows=())


def seed() -> tuple[Badge, ...]:
    return qualified(badges_from(SEED_BADGES), TABLES)


def installed(desired: Desired) -> Catalog:
    """The catalog as it reads right after ``desired`` was applied."""
    return Catalog(
        schema_exists=True,
        tables=frozenset({*OWN_TABLES, AWARD_USER_VIEW}),
        functions=tuple(as_actual_function(f) for f in desired.functions),
        triggers=tuple(as_actual_trigger(t) for t in desired.triggers),
        foreign_triggers=(),
        badge_rows=tuple(ActualBadgeRow(**dataclasses.asdict(r), removed=False) for r in desired.badges),
    )


def as_actual_function(f: FunctionDef) -> ActualFunction:
    return ActualFunction(oid=1, schema=f.schema, name=f.name, body=f.body, security_definer=True,
                          search_path=f.search_path, language="plpgsql", returns="trigger", nargs=0,
                          comment=f.comment)


def as_actual_trigger(t: TriggerDef) -> ActualTrigger:
    return ActualTrigger(oid=2, name=t.name, table=Table(t.table.schema, t.table.name, t.table.oid),
                         tgtype=TRIGGER_ROW | TRIGGER_EVENT_BITS[t.event.value], enabled="O",
                         function_schema=t.function.schema, function_name=t.function.name,
                         columns=tuple(sorted(t.columns)), has_when=t.when is not None, comment=t.comment)


def test_seed_renders_to_the_stored_plan() -> None:
    """The exact SQL badged runs for the seed; regenerate with BADGED_UPDATE_GOLDEN=1 after a deliberate change."""
    text = plan_text(diff(render(seed(), TABLES, SETTINGS, ROUTINES), EMPTY, SETTINGS), badges=3) + "\n"
    golden = GOLDEN / "seed_plan.txt"
    if os.environ.get("BADGED_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_a_first_plan_creates_in_dependency_order_with_trigger_ddl_last() -> None:
    """Only trigger DDL locks the application's tables (until commit): it comes after everything else."""
    plan = diff(render(seed(), TABLES, SETTINGS, ROUTINES), EMPTY, SETTINGS)
    kinds = [step.kind for step in plan.steps]
    assert kinds == ["schema"] + ["table"] * 5 + ["function"] * 3 + ["badge"] * 3 + ["trigger"] * 3
    assert [step.kind for step in plan.on_tables.steps] == ["trigger"] * 3
    assert plan.before_tables.steps + plan.on_tables.steps == plan.steps
    assert all(step.action is Action.CREATE for step in plan.steps)
    assert plan.summary == "15 to create, 0 to replace, 0 to drop"


def test_what_was_applied_diffs_to_nothing() -> None:
    desired = render(seed(), TABLES, SETTINGS, ROUTINES)
    assert diff(desired, installed(desired), SETTINGS).in_sync


def test_update_badges_over_row_columns_get_update_of_and_when() -> None:
    triggers = {t.badges[0]: t for t in render(seed(), TABLES, SETTINGS, ROUTINES).triggers}
    assert triggers["star"].columns == ("hit_views",)
    assert triggers["star"].when == 'pg_catalog.record_image_ne(ROW(OLD."hit_views"), ROW(NEW."hit_views"))'
    assert triggers["pionner"].columns == () and triggers["pionner"].when is None, "age() reads the clock"
    assert triggers["collector"].columns == () and triggers["collector"].when is None


def test_generated_columns_stay_out_of_update_of_but_in_when() -> None:
    (trigger,) = render(badges_from([badge("scored", "score > 5", event="update")]), TABLES, SETTINGS).triggers
    assert trigger.columns == ()
    assert trigger.when == 'pg_catalog.record_image_ne(ROW(OLD."score"), ROW(NEW."score"))'


def test_identifiers_are_quoted_and_values_are_literals() -> None:
    odd = Table("My Schema", 'Odd"Table', 300, "r", (Column("User Id", "integer"),))
    items = [badge("odd", "true", table='"My Schema"."Odd""Table"', user_field='"User Id"', name="It's odd")]
    desired = render(badges_from(items), {'My Schema.Odd"Table': odd}, SETTINGS)
    sql = "\n".join(diff(desired, EMPTY, SETTINGS).steps[-1].sql)
    assert 'ON "My Schema"."Odd""Table"' in sql
    assert "new.\"User Id\"" in desired.functions[0].body
    assert "'It''s odd'" in "\n".join(diff(desired, EMPTY, SETTINGS).steps[-2].sql)


def test_a_body_containing_the_dollar_tag_gets_another_tag() -> None:
    (function,) = render(badges_from([badge("tag", "title <> '$badged$'")]), TABLES, SETTINGS).functions
    create = function.create()[0].as_string(None)
    assert "AS $badged1$" in create and create.endswith("$badged1$")


@pytest.mark.parametrize("change, reason", [
    (dict(body="BEGIN RETURN NULL; END"), "drifted: function body edited by hand"),
    (dict(security_definer=False), "drifted: SECURITY DEFINER removed by hand"),
    (dict(search_path=("public",)), "drifted: search_path changed by hand"),
    (dict(comment="hello"), "drifted: comment changed by hand"),
    (dict(language="sql", returns="integer"), "drifted: redefined by hand as a sql function returning integer"),
])
def test_function_drift_reasons(change: dict[str, object], reason: str) -> None:
    desired = render(seed(), TABLES, SETTINGS, ROUTINES)
    catalog = installed(desired)
    star = next(f for f in catalog.functions if f.name == "badged_public$dummy_sketch$update_of")
    functions = tuple(dataclasses.replace(star, **change) if f is star else f for f in catalog.functions)  # type: ignore[arg-type]
    (step,) = diff(desired, dataclasses.replace(catalog, functions=functions), SETTINGS).steps
    assert (step.action, step.kind, step.badges, step.reason) == (Action.REPLACE, "function", ("star",), reason)


@pytest.mark.parametrize("change, reason", [
    (dict(enabled="D"), "drifted: trigger disabled by hand"),
    (dict(enabled="A"), "drifted: trigger's firing mode changed by hand"),
    (dict(tgtype=TRIGGER_ROW | TRIGGER_EVENT_BITS["insert"]), "drifted: trigger events or timing changed"),
    (dict(columns=()), "drifted: trigger's UPDATE OF or WHEN changed"),
    (dict(function_name="badged_public$dummy_sketch$insert"), "drifted: trigger calls another function"),
    (dict(comment=None), "drifted: trigger recreated by hand"),
    (dict(comment="managed by badged: badges=star sha256=0"), "rendered differently by this version of badged"),
])
def test_trigger_drift_reasons(change: dict[str, object], reason: str) -> None:
    desired = render(seed(), TABLES, SETTINGS, ROUTINES)
    catalog = installed(desired)
    star = next(t for t in catalog.triggers if t.name == "badged_public$dummy_sketch$update_of")
    triggers = tuple(dataclasses.replace(star, **change) if t is star else t for t in catalog.triggers)  # type: ignore[arg-type]
    (step,) = diff(desired, dataclasses.replace(catalog, triggers=triggers), SETTINGS).steps
    assert (step.action, step.kind, step.badges) == (Action.REPLACE, "trigger", ("star",))
    assert step.reason.startswith(reason)
    assert step.sql[0].startswith('DROP TRIGGER "badged_public$dummy_sketch$update_of"')


def test_a_removed_badge_drops_its_trigger_before_its_function() -> None:
    before = render(seed(), TABLES, SETTINGS, ROUTINES)
    after = render(qualified(badges_from(SEED_BADGES[:2]), TABLES), TABLES, SETTINGS, ROUTINES)
    plan = diff(after, installed(before), SETTINGS)
    assert [(s.action, s.kind, s.name) for s in plan.steps] == [
        (Action.DROP, "badge", "star"),
        (Action.DROP, "trigger", "badged_public$dummy_sketch$update_of on public.dummy_sketch"),
        (Action.DROP, "function", "badged.badged_public$dummy_sketch$update_of"),
    ]


def test_a_changed_condition_replaces_only_that_badge() -> None:
    before = render(seed(), TABLES, SETTINGS, ROUTINES)
    edited = [dict(b, condition="count(id) >= 10 from dummy_sketch where user_id = NEW.user_id")
              if b["code"] == "collector" else b for b in SEED_BADGES]
    plan = diff(render(qualified(badges_from(edited), TABLES), TABLES, SETTINGS, ROUTINES), installed(before), SETTINGS)
    assert [(s.action, s.kind, s.name, s.reason) for s in plan.steps] == [
        (Action.REPLACE, "function", "badged.badged_public$dummy_sketch$insert",
         "badge changed in badge.json: collector"),
        (Action.REPLACE, "badge", "collector", "badge changed"),
    ]


def test_plan_json_lists_every_change_with_its_sql() -> None:
    import json

    data = json.loads(plan_json(diff(render(seed(), TABLES, SETTINGS, ROUTINES), EMPTY, SETTINGS), badges=3))
    assert data["in_sync"] is False
    assert data["summary"] == {"create": 15, "replace": 0, "drop": 0}
    assert {"action", "kind", "name", "badges", "reason", "sql"} <= set(data["changes"][0])
    assert any("CREATE TRIGGER" in s for change in data["changes"] for s in change["sql"])
