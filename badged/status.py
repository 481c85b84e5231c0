"""``badged status``: per badge, is the database in sync with badge.json, and how much was awarded.

The state of each badge comes from the same plan ``badged plan`` prints (so the two
can never disagree): no step → in sync; a step whose reason is drift or a missing
object → drifted / missing; a new or changed badge → pending; a badge only the
database still has → removed (its drop is pending).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from badged.catalog import own_table_exists
from badged.own_schema import AWARD_TABLE, RECHECK_TABLE
from badged.plan import Cause, ObjectKind, Plan, Step
from badged.settings import Settings
from badged.spec import Badge

IN_SYNC, DRIFTED, MISSING, PENDING, REMOVED = "in sync", "drifted", "missing", "pending", "removed"


@dataclass(frozen=True)
class AwardStats:
    count: int
    last: datetime | None


@dataclass(frozen=True)
class BadgeStatus:
    code: str
    name: str | None
    status: str
    table: str | None
    event: str | None
    awards: int
    last_award: datetime | None
    reasons: tuple[str, ...]


def badge_statuses(badges: tuple[Badge, ...], plan: Plan, stats: dict[str, AwardStats]) -> list[BadgeStatus]:
    """One status per badge in badge.json, then one per badge only the database has."""
    steps: dict[str, list[Step]] = {}
    for step in plan.steps:
        for code in step.badges:
            steps.setdefault(code, []).append(step)
    result = []
    for badge in badges:
        mine = steps.pop(badge.code, [])
        found = stats.get(badge.code, AwardStats(0, None))
        result.append(BadgeStatus(badge.code, badge.name, _state(mine), str(badge.table), badge.event.value,
                                  found.count, found.last, tuple(_describe(s) for s in mine)))
    for code, leftover in sorted(steps.items()):
        found = stats.get(code, AwardStats(0, None))
        result.append(BadgeStatus(code, None, REMOVED, None, None, found.count, found.last,
                                  tuple(_describe(s) for s in leftover)))
    return result


def _state(steps: list[Step]) -> str:
    causes = {step.cause for step in steps if step.kind is not ObjectKind.BADGE}
    if not steps:
        return IN_SYNC
    if Cause.DRIFTED in causes:
        return DRIFTED
    if Cause.MISSING in causes:
        return MISSING
    return PENDING


def _describe(step: Step) -> str:
    return f"{step.action.symbol} {step.kind} {step.name}: {step.reason}"


def read_award_stats(conn: psycopg.Connection[Any], settings: Settings) -> dict[str, AwardStats]:
    """Number of awards and the last award time per badge (empty before the first reconcile)."""
    if not own_table_exists(conn, settings, AWARD_TABLE):
        return {}
    rows = conn.execute(sql.SQL("SELECT badge, count(*), max(awarded_at) FROM {}.{} GROUP BY badge").format(
        sql.Identifier(settings.schema), sql.Identifier(AWARD_TABLE))).fetchall()
    return {badge: AwardStats(count, last) for badge, count, last in rows}


@dataclass(frozen=True)
class Rechecks:
    """Deferred badge checks waiting for ``badged run`` (see ``recheck``)."""

    pending: int
    oldest_seconds: float | None


def read_rechecks(conn: psycopg.Connection[Any], settings: Settings) -> Rechecks:
    from badged.recheck import pending

    if not own_table_exists(conn, settings, RECHECK_TABLE):
        return Rechecks(0, None)
    return Rechecks(*pending(conn, settings))


def status_text(statuses: list[BadgeStatus], plan: Plan, rechecks: Rechecks = Rechecks(0, None)) -> str:
    header = ("BADGE", "STATUS", "TABLE", "ON", "AWARDS", "LAST AWARD")
    rows = [header] + [
        (s.code, s.status, s.table or "-", s.event or "-", str(s.awards),
         s.last_award.isoformat(sep=" ", timespec="seconds") if s.last_award else "-")
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for s in statuses:
        lines += [f"  {s.code}: {reason}" for reason in s.reasons]
    other = [step for step in plan.steps if not step.badges]
    lines += [f"  badged: {step.action.symbol} {step.kind} {step.name}: {step.reason}" for step in other]
    if rechecks.pending:
        oldest = f", oldest {rechecks.oldest_seconds:.0f} s" if rechecks.oldest_seconds is not None else ""
        lines.append(f"  badged: {rechecks.pending} deferred checks waiting for badged run{oldest} "
                     "(`badged recheck` finishes them now)")
    return "\n".join(lines)


def status_json(statuses: list[BadgeStatus], plan: Plan, rechecks: Rechecks = Rechecks(0, None)) -> str:
    def encode(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return json.dumps({
        "in_sync": plan.in_sync,
        "badges": [{k: encode(v) for k, v in asdict(s).items()} for s in statuses],
        "other_changes": [f"{s.action.symbol} {s.kind} {s.name}: {s.reason}" for s in plan.steps if not s.badges],
        "rechecks_pending": rechecks.pending,
        "recheck_oldest_seconds": rechecks.oldest_seconds,
    }, indent=2)
