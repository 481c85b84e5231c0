"""Badge conditions, parsed and rewritten with PostgreSQL's own parser (pglast).

A condition is written in one of three shapes (see the seed README):

* an expression over the changed row: ``age(NEW.date_joined) > interval '1 year'``;
* the tail of a query with its own FROM: ``count(id) >= 5 from dummy_sketch where user_id = NEW.user_id``;
* an expression over bare columns of the changed row: ``hit_views > 1000``.

We parse ``SELECT <condition>`` and accept exactly one plain SELECT with one output
column. Everything that reaches the database is *deparsed from the checked tree*,
never the text as written, so a comment or a second statement cannot slip through.

Bare column names in the expression shapes are rewritten to ``NEW.col`` (``OLD.col``
for delete badges): with no FROM there is nothing else they could name.

Walking, reading and rewriting the tree is ``condition_tree``'s job; the limits on a
condition's length and nesting, checked before pglast builds the tree, ``condition_limits``'s.
This module is pure: no database, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ParamSpec

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from badged.condition_limits import MAX_DEPTH, MAX_LENGTH, TOO_DEEP, size_problem
from badged.condition_tree import (
    PREFIX,
    and_parts,
    column_path,
    deparse,
    field_name,
    filter_aggregates,
    function_name,
    is_deterministic,
    items,
    parse_select,
    qualify_names,
    reads_row,
    result,
    row_refs,
    single_value,
    unqualified_names,
    value_of,
    walk,
)
from badged.names import Name, Qualification
from badged.routines import FunctionName, RoutineKind, Routines

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "Condition", "ConditionError", "Event", "parse_condition", "qualified",
           "shared_select"]

_P = ParamSpec("_P")

_DATA_MODIFYING = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)

# Clauses that make a query return other than exactly one row per aggregate query.
_NOT_SHAREABLE = ("groupClause", "havingClause", "sortClause", "limitCount", "limitOffset", "windowClause",
                  "distinctClause", "lockingClause", "withClause", "valuesLists", "intoClause")


class Event(StrEnum):
    """The write a badge's trigger fires on (``trigger_condition``)."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"

    @property
    def row_variables(self) -> frozenset[str]:
        """The trigger row variables PostgreSQL defines for this event."""
        return {
            Event.INSERT: frozenset({"new"}),
            Event.UPDATE: frozenset({"new", "old"}),
            Event.DELETE: frozenset({"old"}),
        }[self]

    @property
    def changed_row(self) -> str:
        """The row that bare column names and ``user_field`` refer to."""
        return "old" if self is Event.DELETE else "new"


class ConditionError(ValueError):
    """The condition is not one safe SQL expression or query tail."""


@dataclass(frozen=True)
class Condition:
    """A checked condition, ready to render."""

    written: str
    #: the condition as one SQL expression (a scalar subquery for the query shape)
    expression: str
    #: the same, wrapped so that PostgreSQL rejects a non-boolean result (``NOT (...)``)
    boolean_check: str
    #: columns of the trigger row the condition reads, as (variable, column)
    row_columns: frozenset[tuple[str, str]]
    #: True when the value depends only on NEW's columns (no clock, no other rows)
    new_row_only: bool
    #: for a query tail without GROUP BY, LIMIT and the like: its FROM alone (``SELECT FROM
    #: dummy_sketch``); aggregate conditions with the same one may be computed together
    #: by ``shared_select``
    shared_query: str | None = None
    #: for such a query tail: its value alone (``count(id) >= 5``)
    target: str | None = None
    #: for such a query tail: the AND-ed parts of its WHERE, each deparsed
    where: tuple[str, ...] = ()
    #: for such a query tail: the functions its value calls at its own level (not in
    #: subqueries), which the database says are aggregates or not (``routines``)
    target_calls: frozenset[FunctionName] = frozenset()
    #: True when evaluating it runs a query (a query tail, or a subquery inside), which is
    #: what costs a trigger most; plain expressions are evaluated by plpgsql directly
    runs_query: bool = True
    #: every function the condition calls, anywhere
    calls: frozenset[FunctionName] = frozenset()
    #: True when its value depends on the changed row alone: no query, no subquery, no
    #: function call (a function could read a table)
    row_local: bool = False
    #: for a query tail over exactly one table: that table as written (schema or None, name)
    from_table: tuple[str | None, str] | None = None
    #: columns ``c`` of that table for which its WHERE has the part ``c = NEW.c`` (``OLD.c``
    #: for delete badges): the rows it reads are those of the changed row's ``c``
    scope_columns: frozenset[str] = frozenset()
    #: True when it reads NEW or OLD as a whole row (``row_to_json(NEW)``)
    whole_row: bool = False
    #: True when a subquery appears anywhere in it (its value, its WHERE, …)
    has_subquery: bool = False
    #: the tables, functions and types it names without a schema, as written (``names``
    #: decides their schemas at reconcile time; see ``qualified``)
    names: frozenset[Name] = frozenset()

    def share_key(self, routines: Routines, search_path: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
        """Conditions with the same key are computed by one query (``shared_select``).

        Same FROM, and the same WHERE parts that read the changed row (``user_id =
        NEW.user_id``): those keep the shared scan as narrow as each condition's own;
        their other WHERE parts become FILTERs on its aggregates. Only a value that the
        database says is an aggregate of plain functions returns exactly one row and can
        take FILTERs; anything unknown or ambiguous is not shared. A condition whose WHERE
        does not read the row (a count over the whole table) is never shared.
        """
        if self.shared_query is None:
            return None
        kinds = [routines.kinds(name, search_path) for name in self.target_calls]
        if any(len(found) != 1 for found in kinds) or not any(routines.is_aggregate(name, search_path)
                                                             for name in self.target_calls):
            return None  # unknown, ambiguous (an aggregate in one schema, a function in another), or no aggregate
        if any(found not in ({RoutineKind.AGGREGATE}, {RoutineKind.FUNCTION}) for found in kinds):
            return None  # a window function or a procedure: not one value per query
        scope = tuple(sorted(part for part in self.where if reads_row(part)))
        return (self.shared_query, scope) if scope else None

    @property
    def new_columns(self) -> tuple[str, ...]:
        return tuple(sorted(col for var, col in self.row_columns if var == "new"))


def _refuse_deep_nesting(parse: Callable[_P, Condition]) -> Callable[_P, Condition]:
    """Turn a RecursionError in *parse* into a ConditionError: the net under ``size_problem``; the daemon lives on."""
    @functools.wraps(parse)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> Condition:
        try:
            return parse(*args, **kwargs)
        except RecursionError:
            raise ConditionError(TOO_DEEP) from None
    return guarded


@_refuse_deep_nesting
def parse_condition(written: str, event: Event, qualification: Qualification | None = None) -> Condition:
    """Check *written* for a badge firing on *event*; raise ConditionError if unsafe.

    With *qualification* (see ``names``), every table, function and type it names without
    a schema is written with the schema given there.
    """
    select = _parse_single_select(written)
    names = unqualified_names(select)
    if qualification:
        qualify_names(select, qualification)
    target = value_of(select)
    is_query = _has_query_tail(select)
    if not is_query:
        _qualify_bare_columns(target, event.changed_row)
    _reject_misused_rows(select, event)
    refs = frozenset(row_refs(select))
    row_columns = frozenset((var, column) for var, column in refs if column is not None)
    shared_query, shared_target, where, target_calls = _shareable(select) if is_query else (None, None, (), None)
    from_table, scope_columns = _scope(select, event.changed_row) if is_query else (None, frozenset())
    calls = frozenset(function_name(node) for node in walk(select) if isinstance(node, ast.FuncCall))
    has_subquery = any(isinstance(node, ast.SubLink) for node in walk(target))
    expression = deparse(select if is_query else target)
    if is_query:
        expression = f"({expression})"
    result(select).val = ast.BoolExpr(boolop=enums.BoolExprType.NOT_EXPR, args=(target,))
    boolean_check = deparse(select if is_query else value_of(select))
    if is_query:
        boolean_check = f"({boolean_check})"
    return Condition(
        written=written,
        expression=expression,
        boolean_check=boolean_check,
        row_columns=row_columns,
        new_row_only=(
            not is_query
            and is_deterministic(target)
            and {var for var, _ in refs} <= {"new"}
            and all(column is not None for _, column in refs)
        ),
        shared_query=shared_query,
        target=shared_target,
        where=where,
        target_calls=target_calls or frozenset(),
        runs_query=is_query or has_subquery,
        calls=calls,
        row_local=not is_query and not has_subquery and not calls,
        from_table=from_table,
        scope_columns=scope_columns,
        whole_row=any(column is None for _, column in refs),
        has_subquery=any(isinstance(node, ast.SubLink) for node in walk(select)),
        names=names,
    )


@functools.lru_cache(maxsize=4096)
def _qualified(written: str, event: Event, qualification: tuple[tuple[Name, str], ...]) -> Condition:
    return parse_condition(written, event, dict(qualification))


def qualified(condition: Condition, event: Event, qualification: tuple[tuple[Name, str], ...]) -> Condition:
    """*condition* with its unqualified names written with their schemas (remembered: the daemon asks often)."""
    if not qualification:
        return condition
    return _qualified(condition.written, event, qualification)


def shared_select(shared_query: str, members: list[tuple[str, tuple[str, ...]]],
                  is_aggregate: Callable[[FunctionName], bool]) -> str:
    """One query computing the values of several aggregate conditions over one FROM.

    *members* are (value, WHERE parts) of conditions whose ``shared_query`` (their FROM)
    is the same. The WHERE parts they all have stay in the WHERE; each condition's
    other parts become a ``FILTER (WHERE …)`` on its aggregates (the calls for which
    *is_aggregate* is true: the database's answer, see ``routines``), so that::

        count(*) >= 3 FROM t WHERE user_id = NEW.user_id AND views >= 5
        sum(views) > 9 FROM t WHERE user_id = NEW.user_id

    become ``SELECT ARRAY[count(*) FILTER (WHERE views >= 5) >= 3, sum(views) > 9]
    FROM t WHERE user_id = NEW.user_id``: one scan, and exactly one row, whose element
    *i* is exactly the value condition *i* has on its own (an aggregate over the rows
    matching A AND B is the aggregate over the rows matching A, filtered by B).
    """
    common = [part for part in members[0][1] if all(part in where for _, where in members[1:])]
    values = []
    for value, where in members:
        expression = single_value(value)
        rest = [single_value(part) for part in where if part not in common]
        if rest:
            filter_aggregates(expression, rest[0] if len(rest) == 1 else
                               ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(rest)), is_aggregate)
        values.append(expression)
    select = parse_select(shared_query)
    if common:
        parts = tuple(single_value(part) for part in common)
        select.whereClause = parts[0] if len(parts) == 1 else ast.BoolExpr(
            boolop=enums.BoolExprType.AND_EXPR, args=parts)
    select.targetList = (ast.ResTarget(val=ast.A_ArrayExpr(elements=tuple(values))),)
    return deparse(select)


def _shareable(select: ast.SelectStmt
               ) -> tuple[str | None, str | None, tuple[str, ...], frozenset[FunctionName] | None]:
    """(its FROM, its value, its WHERE parts, the calls of its value) when *select* may return one row.

    Whether it does (its value is an aggregate) is for the database to say: see
    ``Condition.share_key``. A window call (``OVER``) at this level rules it out here.
    """
    if not select.fromClause or any(getattr(select, clause) for clause in _NOT_SHAREABLE):
        return None, None, (), None
    target = value_of(select)
    calls = [node for node in walk(target, into_subqueries=False) if isinstance(node, ast.FuncCall)]
    if not calls or any(call.over is not None for call in calls):
        return None, None, (), None
    shell = ast.SelectStmt(fromClause=select.fromClause)
    return (deparse(shell), deparse(target), tuple(deparse(part) for part in and_parts(select.whereClause)),
            frozenset(function_name(call) for call in calls))


def _scope(select: ast.SelectStmt, row: str) -> tuple[tuple[str | None, str] | None, frozenset[str]]:
    """The one table a query tail reads, and its columns ``c`` that its WHERE equates with ``<row>.c``.

    A query over ``dummy_sketch WHERE user_id = NEW.user_id`` reads only rows of the
    changed row's user: two writes of different users cannot change what the other's
    check reads. Joins, several FROM items and subqueries in FROM give no table.
    """
    from_items = items(select.fromClause, ast.Node)
    table = from_items[0] if len(from_items) == 1 else None
    if not isinstance(table, ast.RangeVar) or table.catalogname:
        return None, frozenset()
    names = {str(table.alias.aliasname) if table.alias else str(table.relname)}
    columns = set()
    for part in and_parts(select.whereClause):
        if not (isinstance(part, ast.A_Expr) and part.kind == enums.A_Expr_Kind.AEXPR_OP):
            continue
        operator = items(part.name, ast.String)
        if len(operator) != 1 or operator[0].sval != "=":
            continue
        sides = [column_path(part.lexpr), column_path(part.rexpr)]
        for mine, theirs in (sides, sides[::-1]):
            if mine is None or theirs is None or len(theirs) != 2 or theirs[0] != row:
                continue
            if (len(mine) == 1 or (len(mine) == 2 and mine[0] in names)) and mine[-1] == theirs[1]:
                columns.add(mine[-1])
    return (table.schemaname, str(table.relname)), frozenset(columns)


def _parse_single_select(written: str) -> ast.SelectStmt:
    """The one plain SELECT ``SELECT <written>`` is, with one output column and nothing that writes or locks."""
    if not written.strip():
        raise ConditionError("is empty")
    problem = size_problem(written)
    if problem is not None:
        raise ConditionError(problem)
    try:
        statements = parse_sql(PREFIX + written)
    except ParseError as exc:
        message = str(exc.args[0]).split(", at index")[0]
        index = exc.args[1] if len(exc.args) > 1 else None
        if isinstance(index, int) and index >= len(PREFIX):
            message += f" (at character {index - len(PREFIX) + 1})"
        raise ConditionError(f"is not valid SQL: {message}") from None
    if len(statements) != 1:
        raise ConditionError("must be one expression or query tail, not several statements (found ';')")
    select = statements[0].stmt
    if not isinstance(select, ast.SelectStmt) or select.op != enums.SetOperation.SETOP_NONE:
        raise ConditionError("must be one expression or query tail (UNION, INTERSECT and EXCEPT are not allowed)")
    if select.intoClause is not None:
        raise ConditionError("must not use INTO: a condition only computes a value")
    if select.lockingClause:
        raise ConditionError("must not lock rows (FOR UPDATE/SHARE): it runs inside the application's write")
    targets = items(select.targetList, ast.ResTarget)
    if len(targets) != 1:
        raise ConditionError("must compute exactly one value; found a comma-separated list")
    value = targets[0].val
    fields = items(value.fields, ast.Node) if isinstance(value, ast.ColumnRef) else ()
    if fields and isinstance(fields[-1], ast.A_Star):
        raise ConditionError("must compute one boolean value, not '*'")
    if targets[0].name is not None:
        raise ConditionError("must not name its result with AS")
    for node in walk(select):
        if isinstance(node, _DATA_MODIFYING):
            raise ConditionError("must not contain INSERT, UPDATE, DELETE or MERGE")
    return select


def _has_query_tail(select: ast.SelectStmt) -> bool:
    """Whether the condition is the tail of a query (FROM, WHERE, GROUP BY, …) rather than an expression."""
    return any(
        getattr(select, clause)
        for clause in ("fromClause", "whereClause", "groupClause", "havingClause", "sortClause", "limitCount",
                       "limitOffset", "windowClause", "distinctClause")
    )


def _qualify_bare_columns(expression: ast.Node, row: str) -> None:
    """Rewrite ``col`` to ``row.col`` at the top level (subqueries keep their own scope)."""
    for node in walk(expression, into_subqueries=False):
        if not isinstance(node, ast.ColumnRef):
            continue
        fields = items(node.fields, ast.Node)
        if len(fields) == 1 and isinstance(fields[0], ast.String):
            if fields[0].sval not in ("new", "old"):  # a whole-row reference stays as it is
                node.fields = (ast.String(sval=row), fields[0])
        elif isinstance(fields[0], ast.String) and fields[0].sval not in ("new", "old"):
            raise ConditionError(
                f"reads {fields[0].sval}.{field_name(fields[1])} but has no FROM; "
                "only NEW and OLD (or bare columns of the changed row) can be read without one"
            )


def _reject_misused_rows(select: ast.SelectStmt, event: Event) -> None:
    """Refuse a reference to NEW or OLD that the trigger's *event* leaves NULL (OLD on insert, NEW on delete)."""
    allowed = event.row_variables
    for var, _column in row_refs(select):
        if var not in allowed:
            use = " or ".join(sorted(v.upper() for v in allowed))
            raise ConditionError(
                f"reads {var.upper()}, which is NULL on {event.value}; use {use} instead"
            )
