"""The diff: what must change so the database matches badge.json.

``diff(desired, catalog)`` compares ``render``'s objects with ``catalog``'s and
returns an ordered Plan of Steps, each with its reason and exact SQL. Objects that
already match produce no step at all, so a second reconcile runs no DDL. Pure: no
database, no I/O; ``apply`` executes a Plan.

Order matters inside the one transaction: badged's schema and tables first, then
functions (a trigger needs its function), then triggers, then functions of removed
badges (their triggers are gone by then), then the badge registry rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from psycopg import sql

from badged.catalog import (
    TRIGGER_EVENT_BITS,
    TRIGGER_ROW,
    ActualBadgeRow,
    ActualFunction,
    ActualTrigger,
    Catalog,
)
from badged.errors import DatabaseMismatch, Problem
from badged.render import (
    AWARD_TABLE,
    BADGE_TABLE,
    COMMENT_MARK,
    GROUP_TABLE,
    BadgeRow,
    Desired,
    FunctionDef,
    TriggerDef,
    comment_for,
    drop_trigger,
    fingerprint,
    render_bootstrap,
    retire_badge_row,
    text,
    upsert_badge_row,
)
from badged.settings import Settings


class Action(StrEnum):
    CREATE = "create"
    REPLACE = "replace"
    DROP = "drop"

    @property
    def symbol(self) -> str:
        return {"create": "+", "replace": "~", "drop": "-"}[self.value]


@dataclass(frozen=True)
class Step:
    """One change: an object, what happens to it and why, and the SQL that does it."""

    action: Action
    kind: str
    name: str
    reason: str
    statements: tuple[str, ...]
    badge: str | None = None

    @property
    def is_ddl(self) -> bool:
        return self.kind != "badge"


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def in_sync(self) -> bool:
        return not self.steps

    def count(self, action: Action) -> int:
        return sum(1 for step in self.steps if step.action is action)

    @property
    def summary(self) -> str:
        return (
            f"{self.count(Action.CREATE)} to create, {self.count(Action.REPLACE)} to replace, "
            f"{self.count(Action.DROP)} to drop"
        )


def diff(desired: Desired, catalog: Catalog, settings: Settings) -> Plan:
    """Everything that must change, in the order it must run."""
    _refuse_foreign_conflicts(desired, catalog)
    steps = [
        *_bootstrap_steps(catalog, settings),
        *_function_steps(desired, catalog),
        *_trigger_steps(desired, catalog),
        *_orphan_function_steps(desired, catalog),
        *_badge_row_steps(desired, catalog, settings),
    ]
    return Plan(tuple(steps))


def _sql(*statements: sql.Composable) -> tuple[str, ...]:
    return tuple(text(statement) for statement in statements)


def _refuse_foreign_conflicts(desired: Desired, catalog: Catalog) -> None:
    foreign = {trigger.key: trigger for trigger in catalog.foreign_triggers}
    problems = [
        Problem(
            f"trigger {trigger.name} on {trigger.table.display} already exists and calls "
            f"{foreign[trigger.key].function_schema}.{foreign[trigger.key].function_name}(), which badged does "
            "not manage; rename or drop it, or choose another --prefix",
            code=trigger.badge,
        )
        for trigger in desired.triggers
        if trigger.key in foreign
    ]
    if problems:
        raise DatabaseMismatch("database", problems)


def _bootstrap_steps(catalog: Catalog, settings: Settings) -> list[Step]:
    bootstrap = render_bootstrap(settings)
    steps = []
    if not catalog.schema_exists:
        steps.append(Step(Action.CREATE, "schema", settings.schema, "badged's schema is missing",
                          _sql(*bootstrap["schema"])))
    for table in (AWARD_TABLE, BADGE_TABLE, GROUP_TABLE):
        if table not in catalog.tables:
            steps.append(Step(Action.CREATE, "table", f"{settings.schema}.{table}",
                              f"badged's {table} table is missing", _sql(*bootstrap[table])))
    return steps


def _function_steps(desired: Desired, catalog: Catalog) -> list[Step]:
    actual = {(f.schema, f.name): f for f in catalog.functions}
    steps = []
    for function in desired.functions:
        found = actual.get((function.schema, function.name))
        display = f"{function.schema}.{function.name}"
        if found is None:
            steps.append(Step(Action.CREATE, "function", display, "new badge", _sql(*function.create()),
                              function.badge))
            continue
        reason = function_drift(function, found)
        if reason is None:
            continue
        statements = function.create()
        if found.returns != "trigger" or found.language != "plpgsql":
            # CREATE OR REPLACE cannot change the return type or language.
            statements = function.drop() + statements
        steps.append(Step(Action.REPLACE, "function", display, reason, _sql(*statements), function.badge))
    return steps


def function_drift(desired: FunctionDef, actual: ActualFunction) -> str | None:
    """Why *actual* differs from *desired*, or None when it does not."""
    differences = []
    if actual.body != desired.body:
        differences.append("function body edited by hand")
    if not actual.security_definer:
        differences.append("SECURITY DEFINER removed by hand")
    if actual.search_path != desired.search_path:
        differences.append("search_path changed by hand")
    if actual.returns != "trigger" or actual.language != "plpgsql":
        differences.append(f"redefined by hand as a {actual.language} function returning {actual.returns}")
    if actual.comment != desired.comment and not differences:
        differences.append("comment changed by hand")
    if not differences:
        return None
    if _written_by_badged(actual) and actual.security_definer and actual.language == "plpgsql":
        return "badge changed in badge.json"
    return "drifted: " + "; ".join(differences)


def _written_by_badged(actual: ActualFunction) -> bool:
    """Whether the function is exactly what badged last wrote (its comment holds that digest)."""
    badge = (actual.comment or "").partition("badge=")[2].partition(" ")[0]
    digest = fingerprint(actual.body, *(actual.search_path or ()))
    return actual.comment == comment_for(badge, digest)


def _trigger_steps(desired: Desired, catalog: Catalog) -> list[Step]:
    actual = {t.key: t for t in catalog.triggers}
    existing_functions = {(f.schema, f.name) for f in catalog.functions}
    wanted = {t.key: t for t in desired.triggers}
    moved = {t.name: t for t in desired.triggers}
    steps = []
    for key, found in actual.items():
        if key in wanted:
            continue
        target = moved.get(found.name)
        reason = f"badge now watches {target.table.display}" if target else "badge removed from badge.json"

        steps.append(Step(Action.DROP, "trigger", _trigger_display(found.name, found.table.display), reason,
                          _sql(drop_trigger(found.name, found.table)), _badge_of(found.comment)))
    for key, trigger in wanted.items():
        display = _trigger_display(trigger.name, trigger.table.display)
        existing = actual.get(key)
        if existing is None:
            function_key = (trigger.function.schema, trigger.function.name)
            why = "missing: dropped outside badged" if function_key in existing_functions else "new badge"
            if trigger.name in {t.name for t in catalog.triggers}:
                why = "badge moved to this table"
            steps.append(Step(Action.CREATE, "trigger", display, why, _sql(*trigger.create()), trigger.badge))
            continue
        drift = trigger_drift(trigger, existing)
        if drift is not None:
            steps.append(Step(Action.REPLACE, "trigger", display, drift,
                              _sql(*trigger.drop(), *trigger.create()), trigger.badge))
    return steps


def trigger_drift(desired: TriggerDef, actual: ActualTrigger) -> str | None:
    """Why *actual* differs from *desired*, or None when it does not."""
    differences = []
    if actual.enabled == "D":
        differences.append("trigger disabled by hand")
    elif actual.enabled != "O":
        differences.append("trigger's firing mode changed by hand (ALTER TABLE ... ENABLE ALWAYS/REPLICA)")
    if (actual.function_schema, actual.function_name) != (desired.function.schema, desired.function.name):
        differences.append("trigger calls another function")
    if actual.tgtype != TRIGGER_ROW | TRIGGER_EVENT_BITS[desired.event.value]:
        differences.append("trigger events or timing changed")
    if set(actual.columns) != set(desired.columns) or actual.has_when != (desired.when is not None):
        differences.append("trigger's UPDATE OF or WHEN changed")
    if differences:
        return "drifted: " + "; ".join(differences)
    if actual.comment == desired.comment:
        return None
    if (actual.comment or "").startswith(COMMENT_MARK):
        return "badge changed in badge.json"
    return "drifted: trigger recreated by hand"


def _orphan_function_steps(desired: Desired, catalog: Catalog) -> list[Step]:
    wanted = {(f.schema, f.name) for f in desired.functions}
    return [
        Step(Action.DROP, "function", f"{f.schema}.{f.name}", "badge removed from badge.json",
             _sql(sql.SQL("DROP FUNCTION {}.{}()").format(sql.Identifier(f.schema), sql.Identifier(f.name))),
             _badge_of(f.comment))
        for f in catalog.functions
        if (f.schema, f.name) not in wanted
    ]


def _badge_row_steps(desired: Desired, catalog: Catalog, settings: Settings) -> list[Step]:
    actual = {row.code: row for row in catalog.badge_rows}
    steps = []
    for row in desired.badges:
        found = actual.get(row.code)
        if found is not None and not found.removed and _same_row(row, found):
            continue
        action = Action.CREATE if found is None or found.removed else Action.REPLACE
        reason = "new badge" if found is None else ("badge restored" if found.removed else "badge changed")
        steps.append(Step(action, "badge", row.code, reason, _sql(upsert_badge_row(settings, row)), row.code))
    wanted = {row.code for row in desired.badges}
    for code, found in actual.items():
        if code not in wanted and not found.removed:
            steps.append(Step(Action.DROP, "badge", code, "badge removed from badge.json (its awards stay)",
                              _sql(retire_badge_row(settings, code)), code))
    return steps


def _same_row(row: BadgeRow, found: ActualBadgeRow) -> bool:
    return (row.name, row.trigger_table, row.trigger_condition, row.condition, row.user_field) == (
        found.name, found.trigger_table, found.trigger_condition, found.condition, found.user_field
    )


def _trigger_display(name: str, table: str) -> str:
    return f"{name} on {table}"


def _badge_of(comment: str | None) -> str | None:
    code = (comment or "").partition("badge=")[2].partition(" ")[0]
    return code or None
