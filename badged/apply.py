"""Execute a Plan: the only module that writes DDL.

It runs inside the caller's transaction (see ``reconcile``), statement by statement
in plan order, and translates PostgreSQL's refusals into badged's errors: a lock
not granted in time or a deadlock is temporary (retry later, nothing applied);
anything else is permanent until someone changes badge.json or the database.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg

from badged.errors import ApplyFailed, ConnectionFailed, LockTimeout
from badged.plan import Plan, Step

_TEMPORARY = (pg.LockNotAvailable, pg.DeadlockDetected, pg.SerializationFailure, pg.QueryCanceled)


def apply_plan(conn: psycopg.Connection[Any], plan: Plan) -> int:
    """Run every statement of *plan*; return how many ran. The caller commits."""
    executed = 0
    for step in plan.steps:
        for statement in step.statements:
            _execute(conn, step, statement)
            executed += 1
    return executed


def _execute(conn: psycopg.Connection[Any], step: Step, statement: str) -> None:
    where = f"{step.action.value} {step.kind} {step.name}"
    try:
        conn.execute(statement)  # no parameters: psycopg sends it verbatim
    except _TEMPORARY as exc:
        raise LockTimeout(
            f"could not {where} in time ({_message(exc)}): another transaction holds a lock on the table; "
            "nothing was applied, retry later"
        ) from None
    except psycopg.OperationalError as exc:
        raise ConnectionFailed(f"lost the database while trying to {where}: {_message(exc)}") from None
    except psycopg.Error as exc:
        raise ApplyFailed(f"PostgreSQL refused to {where}: {_message(exc)}; nothing was applied") from None


def _message(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.diag else None
    return primary or str(exc).strip().splitlines()[0]
