"""One reconcile pass: load → resolve → check → read → render → diff → (apply).

Everything happens in one transaction. When applying, a transaction-level
advisory lock comes first, so two reconcilers never interleave and the second one
reads the catalog only after the first has committed (and then finds nothing to
do). ``SET LOCAL lock_timeout`` keeps an application's long transaction from
queueing every write behind our DDL: we fail fast and retry later instead.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from badged.apply import apply_plan
from badged.catalog import read_catalog, read_names, read_routines, resolve_tables
from badged.db import set_local_search_path
from badged.db_errors import message_of, translate
from badged.errors import DatabaseMismatch, LockTimeout, Problem
from badged.function_context import function_search_path
from badged.logs import get_logger
from badged.objects import Desired, Table
from badged.plan import Action, Outcome, Plan, diff
from badged.qualify import qualify_badges, wanted_names
from badged.render import render, render_condition_check
from badged.settings import Settings
from badged.spec import Badge

log = get_logger("badged.reconcile")

_CHECK_STATEMENT = "badged_condition_check"


def reconcile(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings, *,
              apply: bool, verify: bool = True) -> Outcome:
    """Plan (and with *apply*, execute) the changes that make the database match *badges*.

    A plan is a promise: unless *verify* is false (``status`` only reads), the plan is
    also tried, under the same advisory lock, in a savepoint that is rolled back, so
    whatever would make ``reconcile`` fail makes ``plan`` fail the same way.
    """
    started = time.monotonic()
    try:
        with conn.transaction():
            set_local_timeouts(conn, settings)
            superuser = _is_superuser(conn)
            trial = not apply and verify and not _read_only(conn)
            if apply or trial:
                lock_schema(conn, settings)
            else:
                conn.execute("SET TRANSACTION READ ONLY")
            tables = resolve_tables(conn, (badge.table for badge in badges))
            badges, resolved = resolve_and_check(conn, badges, tables, settings)
            routines = read_routines(conn, {name for badge in badges for _, name in badge.condition.calls})
            desired = render(badges, resolved, settings, routines)
            plan = diff(desired, read_catalog(conn, settings), settings)
            if apply:
                statements = apply_and_check(conn, desired, plan)
            else:
                statements = 0
                if trial and not plan.in_sync:
                    try_plan(conn, desired, plan)
    except psycopg.Error as exc:  # by SQLSTATE: a lost connection, a lock or statement timeout, a missing right
        raise translate(exc, "reconcile", rolled_back=apply) from None
    outcome = Outcome(plan, apply and not plan.in_sync, statements, time.monotonic() - started, len(badges))
    if superuser and any(step.kind == "function" and step.action is not Action.DROP for step in plan.steps):
        log.warning("reconcile.superuser", role=conn.info.user,
                    why="the trigger functions run as their owner inside every application write: as a superuser, "
                        "a condition can read any table (pg_authid too); reconcile as the role that owns the "
                        "watched tables, not a superuser (README, Security)")
    if apply:
        log.info("reconcile.done", badges=len(badges), changes=len(plan.steps), statements=statements,
                 seconds=round(outcome.seconds, 3),
                 changed=[f"{s.action.symbol} {s.kind} {s.name}" for s in plan.steps])
    return outcome


def try_plan(conn: psycopg.Connection[Any], desired: Desired, plan: Plan) -> None:
    """Apply *plan* and check what it made, in a savepoint that is always rolled back."""
    with conn.transaction():
        apply_and_check(conn, desired, plan)
        raise psycopg.Rollback  # psycopg rolls the savepoint back and swallows it


def apply_and_check(conn: psycopg.Connection[Any], desired: Desired, plan: Plan) -> int:
    """Apply *plan*, checking what it created before any application table is locked; return the statements run.

    Trigger DDL locks its table until the transaction ends, so it runs last: the
    application's writes wait for the triggers' own statements and the commit, never for
    the functions' creation or their checks.
    """
    statements = apply_plan(conn, plan.before_tables)
    check_rendered(conn, desired, plan)
    return statements + apply_plan(conn, plan.on_tables)


def check_rendered(conn: psycopg.Connection[Any], desired: Desired, plan: Plan) -> None:
    """The queries of every function the plan creates or replaces must analyse (see ``FunctionDef.probes``)."""
    changed = {step.name for step in plan.steps if step.kind == "function" and step.action is not Action.DROP}
    problems = []
    for function in desired.functions:
        if f"{function.schema}.{function.name}" not in changed:
            continue
        for probe in function.probes:
            message = _analysis_error(conn, function.search_path, sql.SQL(probe))
            if message:
                problems.append(Problem(f"PostgreSQL cannot run the query checking them: {message}",
                                        code=", ".join(function.badges)))
    if problems:
        raise DatabaseMismatch("database", problems)


def _is_superuser(conn: psycopg.Connection[Any]) -> bool:
    """The server reports ``is_superuser`` on connect and on every SET ROLE: no query needed."""
    return conn.info.parameter_status("is_superuser") == "on"


def _read_only(conn: psycopg.Connection[Any]) -> bool:
    """A standby or a read-only session cannot try a plan: it is then only computed (and a warning logged)."""
    row = conn.execute("SELECT pg_catalog.current_setting('transaction_read_only') = 'on'").fetchone()
    if row and row[0]:
        log.warning("plan.not_tried", reason="the session is read-only (a standby, or default_transaction_read_only)")
        return True
    return False


def set_local_timeouts(conn: psycopg.Connection[Any], settings: Settings) -> None:
    conn.execute(
        "SELECT pg_catalog.set_config('lock_timeout', %s, true), pg_catalog.set_config('statement_timeout', %s, true)",
        (f"{settings.lock_timeout_ms}ms", f"{settings.statement_timeout_ms}ms"),
    )


def lock_schema(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """badged's lock on its schema, for this transaction.

    Waiting for another reconcile (a second replica, a Job next to the daemon) is not an error: that wait
    is bounded by ``statement_timeout``, not by ``lock_timeout``, which stays short for the app's tables.
    """
    _set_local_lock_timeout(conn, settings.statement_timeout_ms)
    try:
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(%s, 0))",
                     (f"badged:{settings.schema}",))
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        raise LockTimeout(
            f"another badged reconcile of schema {settings.schema!r} held its lock for more than "
            f"{settings.statement_timeout_ms / 1000:g} s; nothing was applied, retry later"
        ) from None
    _set_local_lock_timeout(conn, settings.lock_timeout_ms)


def _set_local_lock_timeout(conn: psycopg.Connection[Any], milliseconds: int) -> None:
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{milliseconds}ms",))


def qualify_in_database(conn: psycopg.Connection[Any], badges: tuple[Badge, ...],
                        tables: Mapping[str, Table | None], settings: Settings
                        ) -> tuple[tuple[Badge, ...], list[Problem]]:
    """*badges* with their conditions' names qualified as the database resolves them (``names``), and the problems."""
    known = read_names(conn, *wanted_names(badges, tables))
    return qualify_badges(badges, tables, known, settings.allow_volatile)


def resolve_and_check(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], tables: dict[str, Table | None],
                      settings: Settings) -> tuple[tuple[Badge, ...], dict[str, Table]]:
    """*badges* with every name in their conditions qualified (``names``), checked against the database.

    Raise DatabaseMismatch listing every problem: of names, tables, columns and conditions.
    """
    badges, problems = qualify_in_database(conn, badges, tables, settings)
    try:
        resolved = check_against_database(conn, badges, tables, schema=settings.schema)
    except DatabaseMismatch as exc:
        raise DatabaseMismatch("database", problems + exc.problems) from None
    if problems:
        raise DatabaseMismatch("database", problems)
    return badges, resolved


def check_against_database(conn: psycopg.Connection[Any], badges: tuple[Badge, ...],
                           tables: dict[str, Table | None], *, schema: str) -> dict[str, Table]:
    """Every table, user_field and condition must fit the database; raise DatabaseMismatch listing all misfits.

    *schema* is badged's own: a table there (``award``, reached through the search_path or
    written out) or in PostgreSQL's system schemas is never a badge's to watch.
    """
    problems: list[Problem] = []
    resolved: dict[str, Table] = {}
    checkable: list[tuple[Badge, Table]] = []
    for badge in badges:
        table = tables.get(str(badge.table))
        if table is None:
            problems.append(Problem(f"table {badge.table} does not exist (or is not on the search_path)",
                                    badge.index, badge.code, "trigger_table"))
            continue
        if table.kind not in ("r", "p"):
            problems.append(Problem(f"{table.display} is not a table; badges watch tables (or partitioned tables)",
                                    badge.index, badge.code, "trigger_table"))
            continue
        if table.schema == schema or table.schema.startswith("pg_") or table.schema == "information_schema":
            whose = "badged's own" if table.schema == schema else "a system"
            problems.append(Problem(f"{table.display} is in {whose} schema {table.schema!r}; "
                                    "a badge watches one of the application's tables",
                                    badge.index, badge.code, "trigger_table"))
            continue
        resolved[str(badge.table)] = table
        if badge.user_field not in table.column_names:
            problems.append(Problem(f"column {badge.user_field!r} does not exist in {table.display}"
                                    f"{_did_you_mean(badge.user_field, table.column_names)}",
                                    badge.index, badge.code, "user_field"))
            continue
        virtual = _virtual_columns_read(badge, table)
        if virtual:
            problems.append(Problem(virtual, badge.index, badge.code,
                                    "user_field" if table.is_virtual(badge.user_field) else "condition"))
            continue
        checkable.append((badge, table))
    for badge, message in _condition_errors(conn, checkable):
        problems.append(Problem(f"does not fit the database: {message}", badge.index, badge.code, "condition"))
    if problems:
        raise DatabaseMismatch("database", problems)
    return resolved


def _virtual_columns_read(badge: Badge, table: Table) -> str | None:
    """Why *badge* cannot read a virtual generated column of the changed row, or None.

    PostgreSQL 18 computes virtual columns when a query reads them, but passes them to
    row triggers as NULL: such a badge would silently never be awarded.
    """
    fix = "make the column STORED, or compute its expression in the condition"
    if table.is_virtual(badge.user_field):
        return (f"user_field {badge.user_field!r} is a virtual generated column of {table.display}, which "
                f"PostgreSQL passes to row triggers as NULL; {fix}")
    read = sorted({f"{var.upper()}.{column}" for var, column in badge.condition.row_columns
                   if table.is_virtual(column)})
    if read:
        return (f"reads {', '.join(read)}, a virtual generated column of "
                f"{table.display}, which PostgreSQL passes to row triggers as NULL; {fix}")
    if badge.condition.whole_row and any(column.virtual for column in table.columns):
        return (f"reads the whole changed row, and {table.display} has virtual generated columns, which "
                f"PostgreSQL passes to row triggers as NULL; {fix}, or read the columns you need")
    return None


def _did_you_mean(name: str, choices: tuple[str, ...]) -> str:
    guess = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def _condition_errors(conn: psycopg.Connection[Any], checks: list[tuple[Badge, Table]]
                      ) -> list[tuple[Badge, str]]:
    """Let PostgreSQL parse and analyse each condition as the trigger function will see it.

    All conditions analysed with one search_path (see ``names``) are analysed by one
    PREPARE (a reconcile of 1,000 badges is one round trip, not 1,000); only when that
    fails is each analysed on its own, to tell which badges do not fit.
    """
    by_path: dict[tuple[str, ...], list[tuple[Badge, Table]]] = {}
    for badge, table in checks:
        by_path.setdefault(function_search_path(table), []).append((badge, table))
    errors = []
    for path, members in by_path.items():
        together = sql.SQL("SELECT ARRAY[{}]").format(sql.SQL(", ").join(
            sql.SQL("({})").format(render_condition_check(badge, table)) for badge, table in members))
        if len(members) > 1 and _analysis_error(conn, path, together) is None:
            continue
        for badge, table in members:
            message = _analysis_error(conn, path, render_condition_check(badge, table))
            if message:
                errors.append((badge, message))
    return errors


def _analysis_error(conn: psycopg.Connection[Any], search_path: tuple[str, ...], query: sql.Composable) -> str | None:
    """PostgreSQL's message if it cannot PREPARE *query* with a trigger function's *search_path*."""
    check = sql.SQL("PREPARE {} AS {}").format(sql.Identifier(_CHECK_STATEMENT), query)
    try:
        with conn.transaction():  # a savepoint: the check changes nothing and its failure aborts nothing
            set_local_search_path(conn, search_path)
            conn.execute(check)
            conn.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(_CHECK_STATEMENT)))
            raise psycopg.Rollback  # and with it the SET LOCAL search_path
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        return message_of(exc)
    return None
