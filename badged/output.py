"""How plans and outcomes look to people (text) and programs (JSON). Pure."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from badged.parking import ParkedEvent
from badged.pg_badges import SOURCE, Migration
from badged.plan import Action, Outcome, Plan, Step


def plan_text(plan: Plan, *, badges: int, show_sql: bool = True) -> str:
    """Terraform-like: one line per change (+ create, ~ replace, - drop), then its SQL."""
    if plan.in_sync:
        return f"No changes. The database matches badge.json ({badges} badges)."
    lines = [f"Plan: {plan.summary}.", ""]
    for step in plan.steps:
        lines.append(_step_line(step))
        if show_sql:
            for statement in step.sql:
                lines.append(textwrap.indent(statement.rstrip() + ";", "      "))
            lines.append("")
    return "\n".join(lines).rstrip()


def outcome_text(outcome: Outcome) -> str:
    if outcome.plan.in_sync:
        return f"No changes. The database matches badge.json ({outcome.badges} badges)."
    lines = [_step_line(step) for step in outcome.plan.steps]
    lines.append(
        f"Applied: {outcome.plan.summary} ({outcome.statements} statements in one transaction, "
        f"{outcome.seconds:.3f} s)."
    )
    return "\n".join(lines)


def plan_json(plan: Plan, *, badges: int) -> str:
    return json.dumps(_plan_dict(plan, badges), indent=2)


def outcome_json(outcome: Outcome) -> str:
    data = _plan_dict(outcome.plan, outcome.badges)
    data.update(applied=outcome.applied, statements=outcome.statements, seconds=round(outcome.seconds, 4))
    return json.dumps(data, indent=2)


def _plan_dict(plan: Plan, badges: int) -> dict[str, Any]:
    return {
        "in_sync": plan.in_sync,
        "badges": badges,
        "summary": {action.value: plan.count(action) for action in Action},
        "changes": [
            {
                "action": step.action.value,
                "kind": step.kind,
                "name": step.name,
                "badges": list(step.badges),
                "reason": step.reason,
                "sql": list(step.sql),
            }
            for step in plan.steps
        ],
    }


def _step_line(step: Step) -> str:
    return f"  {step.action.symbol} {step.kind} {step.name}  ({step.reason})"


def parked_text(parked: list[ParkedEvent], group: str | None) -> str:
    """``badged events parked``: one line per event (and the start of the answer), then the count."""
    lines = []
    for event in parked:
        replay = " (replay asked)" if event.replay_requested_at else ""
        lines.append(f"{event.group}  award {event.award_id}  {event.badge} for {event.user_id}  via {event.sink}: "
                     f"{event.reason}  x{event.attempts}, since {event.parked_at:%Y-%m-%d %H:%M:%S %Z}{replay}")
        if event.response:
            lines.append(f"    answer: {' '.join(event.response.split())[:200]}")
    lines.append(f"{len(parked)} parked" + (f" in group {group}" if group else ""))
    return "\n".join(lines)


def parked_json(parked: list[ParkedEvent]) -> str:
    return json.dumps([event.as_dict() for event in parked], indent=2)


def replay_text(marked: int, groups: list[str]) -> str:
    """``badged events replay``: how many were marked, for which groups' sinks."""
    return (f"{marked} parked events marked for replay" + (f" by the sinks of group {', '.join(groups)}" if groups
                                                           else "")
            + ("; `badged run` sends them within seconds" if marked else ""))


def migration_text(migration: Migration, *, badges: int) -> str:
    """``badged migrate-from django-pg-badges``: what was found, what is (or was) done on each side."""
    original = migration.original
    if migration.nothing_to_do:
        where = f" and every award of {original.table.display} is in badged's award table" if original.table else ""
        return (f"Nothing to migrate: no {SOURCE} triggers or functions{where}; badged matches badge.json "
                f"({badges} badges)." + _elsewhere(migration))
    lines = [f"{SOURCE}:"]
    if original.table is not None:
        held = sum(count.users for count in original.awards)
        when = (f"awarded_at from its column {original.table.time_column}" if original.table.time_column
                else "awarded_at: not recorded by it, the time of the import")
        lines.append(f"  awards: {original.table.display}, {held} awards of {len(original.awards)} badges ({when})")
        if original.to_import:
            per_code = ", ".join(f"{count.code} {count.to_import}" for count in original.awards if count.to_import)
            lines.append(f"  + import {original.to_import} awards as history, never delivered as events: {per_code}")
        if held > original.to_import:
            lines.append(f"    {held - original.to_import} already in badged's award table, kept as they are")
        gone = [count.code for count in original.awards if not count.in_badge_json]
        if gone:
            lines.append(f"    not in badge.json (imported all the same, as history): {', '.join(gone)}")
    lines += [f"  - trigger {trigger.display}" for trigger in original.triggers]
    lines += [f"  - function {function.display}" for function in original.functions]
    if len(lines) == 1:
        lines.append("  nothing left of it")
    if original.elsewhere:
        lines.append(_elsewhere(migration).strip())
    lines.append("badged:")
    lines += ([f"  in sync with badge.json ({badges} badges)"] if migration.plan.in_sync
              else [_step_line(step) for step in migration.plan.steps])
    if not migration.applied:
        lines.append("Dry run: nothing was changed. Without --dry-run all of it happens in one transaction.")
    else:
        lines.append(f"Migrated in one transaction ({migration.seconds:.3f} s): {migration.imported} awards imported, "
                     f"{len(original.triggers)} triggers and {len(original.functions)} functions of {SOURCE} "
                     f"dropped, {len(migration.plan.steps)} changes by badged.")
        if original.table is not None:
            lines.append(f"{original.table.display} is left in place (its Django app owns it): remove 'badges' from "
                         "INSTALLED_APPS, after `manage.py migrate badges zero` if you want the table gone.")
    return "\n".join(lines)


def _elsewhere(migration: Migration) -> str:
    """The original's functions in other schemas (another tenant's, with its own table): left alone."""
    functions = migration.original.elsewhere
    if not functions:
        return ""
    return (f"\n  left alone, in other schemas (migrate each with its search_path): "
            f"{', '.join(function.display for function in functions)}")


def migration_json(migration: Migration, *, badges: int) -> str:
    original = migration.original
    return json.dumps({
        "source": SOURCE,
        "applied": migration.applied,
        "nothing_to_do": migration.nothing_to_do,
        "imported": migration.imported,
        "seconds": round(migration.seconds, 4),
        "table": original.table.display if original.table else None,
        "awarded_at_column": original.table.time_column if original.table else None,
        "awards": [{"code": c.code, "users": c.users, "to_import": c.to_import, "in_badge_json": c.in_badge_json}
                   for c in original.awards],
        "drop_triggers": [trigger.display for trigger in original.triggers],
        "drop_functions": [function.display for function in original.functions],
        "left_alone_functions": [function.display for function in original.elsewhere],
        "badged": _plan_dict(migration.plan, badges),
    }, indent=2)
