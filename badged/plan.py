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

from badged.drift import function_drift, trigger_drift
from badged.errors import DatabaseMismatch, Problem
from badged.marks import Statement, parse_comment, text
from badged.objects import (
    ActualBadgeRow,
    ActualFunction,
    Catalog,
    Desired,
    FunctionDef,
    drop_trigger,
)
from badged.own_schema import (
    AWARD_TABLE,
    AWARD_USER_VIEW,
    OWN_TABLES,
    BadgeRow,
    render_award_user_view,
    render_bootstrap,
    retire_badge_row,
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


class ObjectKind(StrEnum):
    SCHEMA = "schema"
    TABLE = "table"
    VIEW = "view"
    FUNCTION = "function"
    TRIGGER = "trigger"
    #: a row of badged's badge registry
    BADGE = "badge"


class Cause(StrEnum):
    """Why a step exists: what metrics and ``status`` read (``reason`` is for people)."""

    #: badged's own schema or table is not there yet
    SETUP = "setup"
    #: a badge is new in badge.json
    NEW = "new"
    #: a badge's entry in badge.json changed (or a badge was added to or removed from a shared object)
    CHANGED = "changed"
    #: the registry row of a badge that had been removed is back
    RESTORED = "restored"
    #: a badge left badge.json
    REMOVED = "removed"
    #: a badge moved to another object (its table's trigger function)
    MOVED = "moved"
    #: this version of badged renders the same badge.json differently
    REWRITTEN = "rewritten"
    #: changed by hand (body, search_path, rights, a disabled trigger, ...): repaired
    DRIFTED = "drifted"
    #: dropped by hand while its function stays: repaired
    MISSING = "missing"

    @property
    def repairs(self) -> bool:
        """Whether the step undoes a change made by hand (``badged_drift_repaired_total``, ``status``)."""
        return self in (Cause.DRIFTED, Cause.MISSING)


@dataclass(frozen=True)
class Step:
    """One change: an object, what happens to it and why, and the SQL that does it."""

    action: Action
    kind: ObjectKind
    name: str
    cause: Cause
    #: the cause in words, for people
    reason: str
    statements: tuple[Statement, ...]
    #: the badges this change is for (a table's function serves several; a new badge
    #: in it replaces the function "for" that badge only)
    badges: tuple[str, ...] = ()

    @property
    def sql(self) -> tuple[str, ...]:
        """The statements as text, for people (``apply`` executes the composed statements)."""
        return tuple(text(statement) for statement in self.statements)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def in_sync(self) -> bool:
        return not self.steps

    @property
    def before_tables(self) -> Plan:
        """The steps that lock no application table: all up to the first trigger step."""
        return Plan(self.steps[:self._first_trigger_step])

    @property
    def on_tables(self) -> Plan:
        """Trigger DDL (which locks its table until commit) and what must follow it."""
        return Plan(self.steps[self._first_trigger_step:])

    @property
    def _first_trigger_step(self) -> int:
        return next((i for i, step in enumerate(self.steps) if step.kind is ObjectKind.TRIGGER), len(self.steps))

    def count(self, action: Action) -> int:
        return sum(1 for step in self.steps if step.action is action)

    @property
    def summary(self) -> str:
        return (
            f"{self.count(Action.CREATE)} to create, {self.count(Action.REPLACE)} to replace, "
            f"{self.count(Action.DROP)} to drop"
        )


@dataclass(frozen=True)
class Outcome:
    """What one reconcile pass found and did (made by ``reconcile``, shown by ``output``)."""

    plan: Plan
    applied: bool
    statements: int
    seconds: float
    badges: int


def diff(desired: Desired, catalog: Catalog, settings: Settings) -> Plan:
    """Everything that must change, in the order it must run."""
    _refuse_foreign_conflicts(desired, catalog)
    changed = _changed_badges(desired, catalog)
    # Only trigger DDL locks the application's tables (until commit): it comes last, after
    # everything that takes time (functions, registry rows, the checks of what was created).
    steps = [
        *_bootstrap_steps(catalog, settings),
        *_function_steps(desired, catalog, changed),
        *_badge_row_steps(desired, catalog, settings),
        *_trigger_steps(desired, catalog, changed),
        *_orphan_function_steps(desired, catalog),  # after the triggers that call them are dropped
    ]
    return Plan(tuple(steps))


def _changed_badges(desired: Desired, catalog: Catalog) -> frozenset[str]:
    """Codes whose badge.json entry is new or differs from the registry (what a replaced function is for)."""
    actual = {row.code: row for row in catalog.badge_rows}
    return frozenset(
        row.code for row in desired.badges
        if (found := actual.get(row.code)) is None or found.removed or not _same_row(row, found)
    )


def _why_rewritten(wanted: tuple[str, ...], comment: str | None, changed: frozenset[str]
                   ) -> tuple[Cause, str, tuple[str, ...]]:
    """Reason and badges for replacing an object badged wrote, from what its comment says it served."""
    served = (parse_comment(comment) or ((), ""))[0]
    added = [code for code in wanted if code not in served]
    removed = [code for code in served if code not in wanted]
    edited = [code for code in wanted if code in changed and code not in added]
    parts = []
    if added:
        parts.append("new badge " + ", ".join(added))
    if edited:
        parts.append("badge changed in badge.json: " + ", ".join(edited))
    if removed:
        parts.append("badge removed from badge.json: " + ", ".join(removed))
    if not parts:
        return Cause.REWRITTEN, "rendered differently by this version of badged", wanted
    cause = Cause.NEW if added and not (edited or removed) else Cause.CHANGED
    return cause, "; ".join(parts), (*added, *edited, *removed)


def _sql(*statements: Statement) -> tuple[Statement, ...]:
    return statements


def _refuse_foreign_conflicts(desired: Desired, catalog: Catalog) -> None:
    foreign = {trigger.key: trigger for trigger in catalog.foreign_triggers}
    problems = [
        Problem(
            f"trigger {trigger.name} on {trigger.table.display} already exists and calls "
            f"{foreign[trigger.key].function_schema}.{foreign[trigger.key].function_name}(), which badged does "
            "not manage; rename or drop it, or choose another --prefix",
            code=", ".join(trigger.badges),
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
        steps.append(Step(Action.CREATE, ObjectKind.SCHEMA, settings.schema, Cause.SETUP, "badged's schema is missing",
                          _sql(*bootstrap["schema"])))
    view = [] if AWARD_USER_VIEW in catalog.tables else render_award_user_view(settings)
    for table in OWN_TABLES:
        if table not in catalog.tables:
            with_view = view if table == AWARD_TABLE else []  # built on an empty table: instant
            steps.append(Step(Action.CREATE, ObjectKind.TABLE, f"{settings.schema}.{table}", Cause.SETUP,
                              f"badged's {table} table is missing", _sql(*bootstrap[table], *with_view)))
    if view and AWARD_TABLE in catalog.tables:
        steps.append(Step(Action.CREATE, ObjectKind.VIEW, f"{settings.schema}.{AWARD_USER_VIEW}", Cause.SETUP,
                          f"badged's {AWARD_USER_VIEW} view is missing (new in this version)", _sql(*view)))
    return steps


def _function_steps(desired: Desired, catalog: Catalog, changed: frozenset[str]) -> list[Step]:
    actual = {(f.schema, f.name): f for f in catalog.functions}
    steps = []
    for function in desired.functions:
        found = actual.get((function.schema, function.name))
        display = f"{function.schema}.{function.name}"
        if found is None:
            steps.append(Step(Action.CREATE, ObjectKind.FUNCTION, display, Cause.NEW, _new(function.badges),
                              _sql(*function.create()), function.badges))
            continue
        drift = function_drift(function, found)
        if drift is None:
            continue
        cause, reason, badges = (Cause.DRIFTED, drift.reason, function.badges) if drift.by_hand else \
            _why_rewritten(function.badges, found.comment, changed)
        statements = function.create() + revoke_executors(function, found)
        if found.returns != "trigger" or found.language != "plpgsql":
            # CREATE OR REPLACE cannot change the return type or language.
            statements = function.drop() + statements
        steps.append(Step(Action.REPLACE, ObjectKind.FUNCTION, display, cause, reason, _sql(*statements), badges))
    return steps


def _new(badges: tuple[str, ...]) -> str:
    return ("new badge " if len(badges) == 1 else "new badges ") + ", ".join(badges)


def revoke_executors(desired: FunctionDef, actual: ActualFunction) -> list[Statement]:
    """Take EXECUTE back from every role granted it by hand (``create`` revokes it from PUBLIC)."""
    roles = [role for role in actual.executors if role != "PUBLIC"]
    if not roles:
        return []
    # CASCADE: a role granted it WITH GRANT OPTION may have passed it on
    return [sql.SQL("REVOKE ALL ON FUNCTION {}() FROM {} CASCADE").format(
        desired.qualified, sql.SQL(", ").join(map(sql.Identifier, roles)))]


def _trigger_steps(desired: Desired, catalog: Catalog, changed: frozenset[str]) -> list[Step]:
    actual = {t.key: t for t in catalog.triggers}
    existing_functions = {(f.schema, f.name) for f in catalog.functions}
    wanted = {t.key: t for t in desired.triggers}
    steps = []
    for key, found in actual.items():
        if key in wanted:
            continue
        # a table's trigger names no badges: its function's comment does
        served_by = next((f.comment for f in catalog.functions
                          if (f.schema, f.name) == (found.function_schema, found.function_name)), None)
        cause, reason, badges = _why_dropped(found.comment if "badge=" in (found.comment or "") else served_by,
                                             desired)
        steps.append(Step(Action.DROP, ObjectKind.TRIGGER, _trigger_display(found.name, found.table.display), cause,
                          reason, _sql(drop_trigger(found.name, found.table)), badges))
    for key, trigger in wanted.items():
        display = _trigger_display(trigger.name, trigger.table.display)
        existing = actual.get(key)
        if existing is None:
            function_key = (trigger.function.schema, trigger.function.name)
            cause, why = ((Cause.MISSING, "missing: dropped outside badged") if function_key in existing_functions
                          else (Cause.NEW, _new(trigger.badges)))
            steps.append(Step(Action.CREATE, ObjectKind.TRIGGER, display, cause, why, _sql(*trigger.create()),
                              trigger.badges))
            continue
        drift = trigger_drift(trigger, existing)
        if drift is None:
            continue
        edited = tuple(code for code in trigger.badges if code in changed)
        if drift.by_hand:
            cause, reason, badges = Cause.DRIFTED, drift.reason, trigger.badges
        elif edited:
            cause, reason, badges = Cause.CHANGED, "badge changed in badge.json: " + ", ".join(edited), edited
        else:
            cause, reason, badges = Cause.REWRITTEN, "rendered differently by this version of badged", trigger.badges
        steps.append(Step(Action.REPLACE, ObjectKind.TRIGGER, display, cause, reason,
                          _sql(*trigger.drop(), *trigger.create()), badges))
    return steps


def _why_dropped(comment: str | None, desired: Desired) -> tuple[Cause, str, tuple[str, ...]]:
    """Why an object badged wrote is no longer wanted: its badges are gone, or moved to another object."""
    served = (parse_comment(comment) or ((), ""))[0]
    still = {code for function in desired.functions for code in function.badges}
    if served and all(code in still for code in served):
        return Cause.MOVED, "its badges are now checked by their table's trigger function", served
    return (Cause.REMOVED, "badge removed from badge.json",
            tuple(code for code in served if code not in still) or served)


def _orphan_function_steps(desired: Desired, catalog: Catalog) -> list[Step]:
    wanted = {(f.schema, f.name) for f in desired.functions}
    steps = []
    for found in catalog.functions:
        if (found.schema, found.name) in wanted:
            continue
        cause, reason, badges = _why_dropped(found.comment, desired)
        drop = sql.SQL("DROP FUNCTION {}()").format(sql.Identifier(found.schema, found.name))
        steps.append(Step(Action.DROP, ObjectKind.FUNCTION, f"{found.schema}.{found.name}", cause, reason, _sql(drop),
                          badges))
    return steps


def _badge_row_steps(desired: Desired, catalog: Catalog, settings: Settings) -> list[Step]:
    actual = {row.code: row for row in catalog.badge_rows}
    steps = []
    for row in desired.badges:
        found = actual.get(row.code)
        if found is not None and not found.removed and _same_row(row, found):
            continue
        action = Action.CREATE if found is None or found.removed else Action.REPLACE
        cause, reason = ((Cause.NEW, "new badge") if found is None else
                         (Cause.RESTORED, "badge restored") if found.removed else (Cause.CHANGED, "badge changed"))
        steps.append(Step(action, ObjectKind.BADGE, row.code, cause, reason, _sql(upsert_badge_row(settings, row)),
                          (row.code,)))
    wanted = {row.code for row in desired.badges}
    for code, found in actual.items():
        if code not in wanted and not found.removed:
            steps.append(Step(Action.DROP, ObjectKind.BADGE, code, Cause.REMOVED,
                              "badge removed from badge.json (its awards stay)", _sql(retire_badge_row(settings, code)),
                              (code,)))
    return steps


def _same_row(row: BadgeRow, found: ActualBadgeRow) -> bool:
    return (row.name, row.trigger_table, row.trigger_condition, row.condition, row.user_field) == (
        found.name, found.trigger_table, found.trigger_condition, found.condition, found.user_field
    )


def _trigger_display(name: str, table: str) -> str:
    return f"{name} on {table}"
