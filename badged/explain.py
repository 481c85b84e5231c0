"""``badged explain --user U``: for each badge, held or not, and its condition evaluated for U, term by term.

Read-only: one READ ONLY transaction with badged's statement timeout, the conditions qualified and checked
as reconcile does them, and evaluated as the trigger would (its search_path). A condition reads NEW (OLD
for delete badges): that is the user's most recent row of the trigger table (highest primary key, else the
last physical row), or, when the user has none, a row with only the user's column set, and the answer says
which. Each comparison is evaluated in a savepoint of its own, so one that fails (a division by zero)
is reported beside the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from badged.catalog import own_table_exists, read_routines, resolve_tables
from badged.condition import Event
from badged.db import set_local_search_path
from badged.db_errors import message_of, translate
from badged.errors import ConfigError
from badged.explain_terms import Explanation, Term, TermValue, terms_of
from badged.function_context import function_search_path
from badged.objects import Desired, Table
from badged.own_schema import AWARD_TABLE
from badged.reconcile import resolve_and_check, set_local_timeouts
from badged.render import render
from badged.routines import Routines
from badged.settings import Settings
from badged.spec import Badge


def explain_user(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings, user: str, *,
                 only: Collection[str] = ()) -> list[Explanation]:
    """Explain *badges* (or the codes in *only*) for *user* (their id as awards store it: text)."""
    unknown = sorted(set(only) - {badge.code for badge in badges})
    if unknown:
        raise ConfigError(f"badge.json has no badge {', '.join(map(repr, unknown))}")
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            set_local_timeouts(conn, settings)
            tables = resolve_tables(conn, (badge.table for badge in badges))
            qualified, resolved = resolve_and_check(conn, badges, tables, settings)
            routines = read_routines(conn, {name for badge in qualified for _, name in badge.condition.calls})
            desired = render(qualified, resolved, settings, routines)
            held = _held(conn, settings, user)
            return [_explain(conn, badge, resolved[str(badge.table)], desired, routines, held.get(badge.code), user)
                    for badge in qualified if not only or badge.code in only]
    except psycopg.Error as exc:
        raise translate(exc, "explain") from None


def _held(conn: psycopg.Connection[Any], settings: Settings, user: str) -> dict[str, datetime]:
    if not own_table_exists(conn, settings, AWARD_TABLE):
        return {}
    rows = conn.execute(sql.SQL("SELECT badge, awarded_at FROM {} WHERE user_id = %s").format(
        sql.Identifier(settings.schema, AWARD_TABLE)), (user,)).fetchall()
    return dict(rows)


def _trigger(badge: Badge, table: Table, desired: Desired) -> str:
    """How a write reaches *badge*'s check: the event, and for updates the columns that must change."""
    trigger = next((t for t in desired.triggers if badge.code in t.badges), None)
    if badge.event is not Event.UPDATE or trigger is None:
        return f"{badge.event.value} of {table.display}"
    return (f"update of {', '.join(trigger.columns)} on {table.display}, when one of them changes"
            if trigger.columns else f"every update of {table.display}")


def _explain(conn: psycopg.Connection[Any], badge: Badge, table: Table, desired: Desired, routines: Routines,
             held_since: datetime | None, user: str) -> Explanation:
    found = Explanation(badge.code, badge.name, user, held_since, trigger=_trigger(badge, table, desired),
                        condition=badge.condition.written.strip())
    set_local_search_path(conn, function_search_path(table))
    base = _row_source(conn, badge, table, user)
    try:
        real = _evaluate(conn, sql.SQL("x.real"), base)
    except psycopg.DatabaseError as exc:  # the row itself cannot be read (a right missing)
        return _with(found, row=_row_text(badge, table, user, None), error=message_of(exc))
    value, error = None, None
    try:
        value = _evaluate(conn, sql.SQL(badge.condition.expression), base)
    except psycopg.DatabaseError as exc:  # the terms still say which part fails
        error = message_of(exc)
    path = function_search_path(table)
    terms = tuple(_term_value(conn, term, base)
                  for term in terms_of(badge.condition, lambda name: routines.is_aggregate(name, path)))
    return _with(found, row=_row_text(badge, table, user, bool(real)), value=value, terms=terms, error=error)


def _with(found: Explanation, **changes: Any) -> Explanation:
    return dataclasses.replace(found, **changes)


def _row_text(badge: Badge, table: Table, user: str, real: bool | None) -> str:
    variable = {Event.INSERT: "NEW", Event.UPDATE: "NEW and OLD", Event.DELETE: "OLD"}[badge.event]
    if real is None:
        return f"{variable}: user {user}'s most recent row of {table.display}"
    row = (f"user {user}'s most recent row of {table.display}" if real else
           f"a row of {table.display} with only {badge.user_field} = {user!r} (user {user} has none)")
    caveat = {Event.UPDATE: " (both the same row: a comparison of OLD with NEW reads no change here)",
              Event.DELETE: " (still there: the check, after a delete, would not see it in its table)"}
    return f"{variable} = {row}{caveat.get(badge.event, '')}"


def _row_source(conn: psycopg.Connection[Any], badge: Badge, table: Table, user: str) -> sql.Composed:
    """FROM … that binds the condition's row variable(s) to the user's most recent row, or a stand-in."""
    order = _order(conn, table)
    row = sql.Identifier(badge.event.changed_row)
    variables = [row] if badge.event is not Event.UPDATE else [sql.Identifier("new"), sql.Identifier("old")]
    lateral = sql.SQL("").join(sql.SQL(" CROSS JOIN LATERAL (SELECT (x.r).*) AS {}").format(v) for v in variables)
    # the user's id as a literal of the column's type: the comparison can use the table's index, and no
    # parameter is passed, so a "%" in a condition is only an operator
    column_type = next((c.type for c in table.columns if c.name == badge.user_field), "text")
    source = sql.SQL(
        "FROM (SELECT COALESCE(p.r, pg_catalog.jsonb_populate_record(NULL::{table},"
        " pg_catalog.jsonb_build_object({column}, {user}))) AS r, p.found IS NOT NULL AS real\n"
        "      FROM (SELECT NULL) AS one LEFT JOIN (SELECT t AS r, true AS found FROM {table} AS t\n"
        "            WHERE t.{field} = CAST({user} AS {type}) ORDER BY {order} LIMIT 1) AS p ON true) AS x{lateral}"
    ).format(table=table.qualified, column=sql.Literal(badge.user_field), field=sql.Identifier(badge.user_field),
             user=sql.Literal(user), type=sql.SQL(column_type), order=order, lateral=lateral)
    return source


def _order(conn: psycopg.Connection[Any], table: Table) -> sql.Composable:
    """The table's primary key, newest first, else its physical order (the last row written is usually last)."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum)",
        (table.qualified.as_string(conn),)).fetchall()
    columns: list[sql.Composable] = [sql.SQL("t.{} DESC").format(sql.Identifier(name)) for (name,) in rows]
    columns = columns or [sql.SQL("t.ctid DESC")]
    return sql.SQL(", ").join(columns)


def _evaluate(conn: psycopg.Connection[Any], expression: sql.Composable, source: sql.Composed) -> Any:
    with conn.transaction():
        # as JSON: values keep their type (numbers, booleans) and PostgreSQL's own text for the rest (intervals);
        # in a ROW, so that a bare literal ('x') is text, not "unknown"
        row = conn.execute(sql.SQL("SELECT pg_catalog.to_jsonb(ROW({})) -> 'f1' ").format(expression) + source
                           ).fetchone()
    return row[0] if row else None


def _term_value(conn: psycopg.Connection[Any], term: Term, source: sql.Composed) -> TermValue:
    try:
        sides = (term.left, term.right, term.whole)
        return TermValue(term, *(_evaluate(conn, sql.SQL(part), source) for part in sides))
    except psycopg.DatabaseError as exc:
        return TermValue(term, error=message_of(exc))
