"""Execute a Plan: the only module that writes DDL.

It runs inside the caller's transaction (see ``reconcile``), statement by statement
in plan order, and translates PostgreSQL's refusals into badged's errors (by SQLSTATE,
in ``db_errors``): a lock not granted in time, a deadlock, a statement timeout or a
lost connection is temporary (retry later, nothing applied); anything else, such as
a missing right, is permanent until someone changes badge.json or the database.
"""

from __future__ import annotations

from typing import Any

import psycopg

from badged.db_errors import translate
from badged.errors import ApplyFailed
from badged.marks import Statement
from badged.plan import Plan, Step


def apply_plan(conn: psycopg.Connection[Any], plan: Plan) -> int:
    """Run every statement of *plan*; return how many ran. The caller commits."""
    executed = 0
    for step in plan.steps:
        for statement in step.statements:
            _execute(conn, step, statement)
            executed += 1
    return executed


def _execute(conn: psycopg.Connection[Any], step: Step, statement: Statement) -> None:
    try:
        conn.execute(statement)  # composed with psycopg.sql all the way from render: no value was pasted
    except psycopg.Error as exc:
        raise translate(exc, f"{step.action.value} {step.kind} {step.name}", rolled_back=True,
                        refused=ApplyFailed) from None
