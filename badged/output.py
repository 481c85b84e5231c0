"""How plans and outcomes look to people (text) and programs (JSON). Pure."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from badged.parking import ParkedEvent
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
