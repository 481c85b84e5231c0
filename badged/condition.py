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

This module is pure: no database, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream

_PREFIX = "SELECT "

# Node types that may appear in a condition whose value depends only on the row:
# no function calls (now(), age() and random() change their answer over time),
# no subqueries, no CURRENT_TIMESTAMP-like values.
_DETERMINISTIC_NODES = (
    ast.A_Const,
    ast.A_Expr,
    ast.BoolExpr,
    ast.BooleanTest,
    ast.ColumnRef,
    ast.NullTest,
    ast.String,
    ast.Integer,
    ast.Float,
    ast.Boolean,
    ast.TypeName,
    ast.TypeCast,
    ast.CaseExpr,
    ast.CaseWhen,
    ast.CoalesceExpr,
    ast.A_ArrayExpr,
)
# A constant cast to one of these reads the clock ('now'::timestamptz, 'today'::date).
_CLOCK_TYPES = frozenset(
    {"date", "time", "timetz", "timestamp", "timestamptz", "interval", "abstime", "reltime"}
)

_DATA_MODIFYING = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)

# Built-in aggregates: a query tail whose value is one of these (and has no GROUP BY)
# returns exactly one row, so several such tails over the same FROM/WHERE can be
# computed by one query (bronze/silver/gold badges on the same count).
_AGGREGATES = frozenset({
    "count", "sum", "min", "max", "avg", "bool_and", "bool_or", "every", "array_agg", "string_agg",
    "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "stddev", "stddev_pop", "stddev_samp",
    "variance", "var_pop", "var_samp", "bit_and", "bit_or", "bit_xor",
})
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
    is_query: bool
    #: the condition as one SQL expression (a scalar subquery for the query shape)
    expression: str
    #: the same, wrapped so that PostgreSQL rejects a non-boolean result (``NOT (...)``)
    boolean_check: str
    #: columns of the trigger row the condition reads, as (variable, column)
    row_columns: frozenset[tuple[str, str]]
    #: True when the value depends only on NEW's columns (no clock, no other rows)
    new_row_only: bool
    #: for an aggregate query tail: its FROM alone (``SELECT FROM dummy_sketch``); conditions
    #: with the same one are computed together by ``shared_select``
    shared_query: str | None = None
    #: for an aggregate query tail: its value alone (``count(id) >= 5``)
    target: str | None = None
    #: for an aggregate query tail: the AND-ed parts of its WHERE, each deparsed
    where: tuple[str, ...] = ()

    @property
    def share_key(self) -> tuple[str, tuple[str, ...]] | None:
        """Conditions with the same key are computed by one query (``shared_select``).

        Same FROM, and the same WHERE parts that read the changed row (``user_id =
        NEW.user_id``): those keep the shared scan as narrow as each condition's own;
        their other WHERE parts become FILTERs. A condition whose WHERE does not read
        the row (a count over the whole table) is never shared.
        """
        scope = tuple(sorted(part for part in self.where if _reads_row(part)))
        return (self.shared_query, scope) if self.shared_query is not None and scope else None
    #: True when evaluating it runs a query (a query tail, or a subquery inside), which is
    #: what costs a trigger most; plain expressions are evaluated by plpgsql directly
    runs_query: bool = True

    @property
    def new_columns(self) -> tuple[str, ...]:
        return tuple(sorted(col for var, col in self.row_columns if var == "new"))


def parse_condition(written: str, event: Event) -> Condition:
    """Check *written* for a badge firing on *event*; raise ConditionError if unsafe."""
    select = _parse_single_select(written)
    target = select.targetList[0].val
    is_query = _has_query_tail(select)
    if not is_query:
        _qualify_bare_columns(target, event.changed_row)
    _reject_misused_rows(select, event)
    row_refs = frozenset(_row_refs(select))
    row_columns = frozenset((var, column) for var, column in row_refs if column is not None)
    shared_query, shared_target, where = _shareable(select) if is_query else (None, None, ())
    expression = _deparse(select if is_query else target)
    if is_query:
        expression = f"({expression})"
    select.targetList[0].val = ast.BoolExpr(boolop=enums.BoolExprType.NOT_EXPR, args=(target,))
    boolean_check = _deparse(select if is_query else select.targetList[0].val)
    if is_query:
        boolean_check = f"({boolean_check})"
    return Condition(
        written=written,
        is_query=is_query,
        expression=expression,
        boolean_check=boolean_check,
        row_columns=row_columns,
        new_row_only=(
            not is_query
            and _is_deterministic(target)
            and {var for var, _ in row_refs} <= {"new"}
            and all(column is not None for _, column in row_refs)
        ),
        shared_query=shared_query,
        target=shared_target,
        where=where,
        runs_query=is_query or any(isinstance(node, ast.SubLink) for node in _walk(target)),
    )


def shared_select(shared_query: str, members: list[tuple[str, tuple[str, ...]]]) -> str:
    """One query computing the values of several aggregate conditions over one FROM.

    *members* are (value, WHERE parts) of conditions whose ``shared_query`` (their FROM)
    is the same. The WHERE parts they all have stay in the WHERE; each condition's
    other parts become a ``FILTER (WHERE …)`` on its aggregates, so that::

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
        expression = _single_value(value)
        rest = [_single_value(part) for part in where if part not in common]
        if rest:
            _filter_aggregates(expression, rest[0] if len(rest) == 1 else
                               ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(rest)))
        values.append(expression)
    select: Any = parse_sql(shared_query)[0].stmt
    if common:
        parts = tuple(_single_value(part) for part in common)
        select.whereClause = parts[0] if len(parts) == 1 else ast.BoolExpr(
            boolop=enums.BoolExprType.AND_EXPR, args=parts)
    select.targetList = (ast.ResTarget(val=ast.A_ArrayExpr(elements=tuple(values))),)
    return _deparse(select)


def _filter_aggregates(expression: Any, condition: Any) -> None:
    """Add ``FILTER (WHERE condition)`` to every aggregate computed at this level of *expression*."""
    for node in _walk(expression, into_subqueries=False):
        if _is_aggregate_call(node):
            node.agg_filter = condition if node.agg_filter is None else ast.BoolExpr(
                boolop=enums.BoolExprType.AND_EXPR, args=(node.agg_filter, condition))


def _reads_row(expression: str) -> bool:
    return any(var in ("new", "old") for var, _ in _row_refs(_single_value(expression)))


def _single_value(expression: str) -> Any:
    select: Any = parse_sql(_PREFIX + expression)[0].stmt
    return select.targetList[0].val


def _shareable(select: Any) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(its FROM, its value, its WHERE parts) when *select* is an aggregate query that returns one row."""
    if not select.fromClause or any(getattr(select, clause, None) for clause in _NOT_SHAREABLE):
        return None, None, ()
    target = select.targetList[0].val
    if not _has_aggregate(target):
        return None, None, ()
    where: Any = select.whereClause
    if where is None:
        parts: tuple[Any, ...] = ()
    elif isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
        parts = tuple(where.args or ())
    else:
        parts = (where,)
    shell: Any = ast.SelectStmt(fromClause=select.fromClause)
    return _deparse(shell), _deparse(target), tuple(_deparse(part) for part in parts)


def _has_aggregate(expression: Any) -> bool:
    """Whether a built-in aggregate (not a window call) is computed at this query's level."""
    return any(_is_aggregate_call(node) for node in _walk(expression, into_subqueries=False))


def _is_aggregate_call(node: Any) -> bool:
    if not isinstance(node, ast.FuncCall) or node.over is not None:
        return False
    names: Any = node.funcname
    schema = names[0].sval if len(names) == 2 else "pg_catalog"
    return bool(schema == "pg_catalog" and names[-1].sval in _AGGREGATES)


def _parse_single_select(written: str) -> Any:
    if not written.strip():
        raise ConditionError("is empty")
    try:
        statements = parse_sql(_PREFIX + written)
    except ParseError as exc:
        message, index = exc.args[0], exc.args[1] if len(exc.args) > 1 else None
        message = message.split(", at index")[0]
        if isinstance(index, int) and index >= len(_PREFIX):
            message += f" (at character {index - len(_PREFIX) + 1})"
        raise ConditionError(f"is not valid SQL: {message}") from None
    if len(statements) != 1:
        raise ConditionError("must be one expression or query tail, not several statements (found ';')")
    select: Any = statements[0].stmt
    if not isinstance(select, ast.SelectStmt) or select.op != enums.SetOperation.SETOP_NONE:
        raise ConditionError("must be one expression or query tail (UNION, INTERSECT and EXCEPT are not allowed)")
    if select.intoClause is not None:
        raise ConditionError("must not use INTO: a condition only computes a value")
    if select.lockingClause:
        raise ConditionError("must not lock rows (FOR UPDATE/SHARE): it runs inside the application's write")
    targets: Any = select.targetList or ()
    if len(targets) != 1:
        raise ConditionError("must compute exactly one value; found a comma-separated list")
    fields: Any = targets[0].val.fields if isinstance(targets[0].val, ast.ColumnRef) else ()
    if fields and isinstance(fields[-1], ast.A_Star):
        raise ConditionError("must compute one boolean value, not '*'")
    if targets[0].name is not None:
        raise ConditionError("must not name its result with AS")
    for node in _walk(select):
        if isinstance(node, _DATA_MODIFYING):
            raise ConditionError("must not contain INSERT, UPDATE, DELETE or MERGE")
    return select


def _has_query_tail(select: Any) -> bool:
    return any(
        getattr(select, clause)
        for clause in ("fromClause", "whereClause", "groupClause", "havingClause", "sortClause", "limitCount",
                       "limitOffset", "windowClause", "distinctClause")
    )


def _walk(node: Any, *, into_subqueries: bool = True) -> Iterator[Any]:
    """Yield *node* and every node below it (optionally stopping at subqueries)."""
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item, into_subqueries=into_subqueries)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    if not into_subqueries and isinstance(node, ast.SubLink):
        return
    for attribute in getattr(type(node), "__slots__", ()):
        yield from _walk(getattr(node, attribute), into_subqueries=into_subqueries)


def _qualify_bare_columns(expression: Any, row: str) -> None:
    """Rewrite ``col`` to ``row.col`` at the top level (subqueries keep their own scope)."""
    for node in _walk(expression, into_subqueries=False):
        if not isinstance(node, ast.ColumnRef):
            continue
        fields: Any = node.fields
        if len(fields) == 1 and isinstance(fields[0], ast.String):
            if fields[0].sval not in ("new", "old"):  # a whole-row reference stays as it is
                node.fields = (ast.String(sval=row), fields[0])
        elif isinstance(fields[0], ast.String) and fields[0].sval not in ("new", "old"):
            raise ConditionError(
                f"reads {fields[0].sval}.{_field_name(fields[1])} but has no FROM; "
                "only NEW and OLD (or bare columns of the changed row) can be read without one"
            )


def _field_name(field: Any) -> str:
    return str(field.sval) if isinstance(field, ast.String) else "*"


def _reject_misused_rows(select: Any, event: Event) -> None:
    allowed = event.row_variables
    for var, _column in _row_refs(select):
        if var not in allowed:
            use = " or ".join(sorted(v.upper() for v in allowed))
            raise ConditionError(
                f"reads {var.upper()}, which is NULL on {event.value}; use {use} instead"
            )


def _row_refs(select: Any) -> Iterator[tuple[str, str | None]]:
    """(variable, column) for every NEW/OLD reference; column None for a whole-row reference."""
    for node in _walk(select):
        fields: Any = node.fields if isinstance(node, ast.ColumnRef) else ()
        if not fields or not isinstance(fields[0], ast.String) or fields[0].sval not in ("new", "old"):
            continue
        column = fields[1] if len(fields) >= 2 else None
        yield str(fields[0].sval), str(column.sval) if isinstance(column, ast.String) else None


def _is_deterministic(expression: Any) -> bool:
    for node in _walk(expression):
        if not isinstance(node, _DETERMINISTIC_NODES):
            return False
        if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
            type_names: Any = node.typeName.names if node.typeName else ()
            type_name = type_names[-1] if type_names else None
            if isinstance(type_name, ast.String) and type_name.sval in _CLOCK_TYPES:
                return False
    return True


def _deparse(node: ast.Node) -> str:
    return str(RawStream()(node))
