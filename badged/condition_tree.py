"""Reading and rewriting a condition's pglast syntax tree: walking it, its names, its row references, deparsing.

pglast's stubs type every node field that holds a list (a C ``List *``) as ``tuple[Any, ...]``;
``items`` reads such a field as the nodes the grammar puts there, checked, so that nothing here
needs ``Any``.

This module is pure: no database, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from pglast import ast, enums, parse_sql
from pglast.stream import RawStream

from badged.names import Name, NameKind, Qualification
from badged.routines import FunctionName

#: What a condition is parsed behind: ``SELECT <condition>``.
PREFIX = "SELECT "

#: A node that names a table, function or type.
NamingNode = ast.RangeVar | ast.FuncCall | ast.TypeName

_N = TypeVar("_N", bound=ast.Node)

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


def items(field: tuple[object, ...] | None, kind: type[_N]) -> tuple[_N, ...]:
    """The nodes of a list *field* (``()`` when unset), each of which the grammar makes a *kind*.

    Raises TypeError when one is not: a tree this module does not understand, never a condition's fault.
    """
    found = field or ()
    nodes = tuple(item for item in found if isinstance(item, kind))
    if len(nodes) != len(found):
        raise TypeError(f"expected only {kind.__name__} nodes, found {[type(item).__name__ for item in found]}")
    return nodes


def walk(node: object, *, into_subqueries: bool = True) -> Iterator[ast.Node]:
    """Yield *node* and every node below it (optionally stopping at subqueries).

    *node* is anything a node's field holds: a node, a tuple of them, a string, a number, None.
    """
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item, into_subqueries=into_subqueries)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    if not into_subqueries and isinstance(node, ast.SubLink):
        return
    for attribute in getattr(type(node), "__slots__", ()):
        yield from walk(getattr(node, attribute), into_subqueries=into_subqueries)


def deparse(node: ast.Node) -> str:
    """*node* written back as SQL."""
    return RawStream()(node)


def parse_select(sql: str) -> ast.SelectStmt:
    """The SELECT that *sql* is: SQL badged deparsed itself (a condition or a part of one), not input."""
    statement = parse_sql(sql)[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        raise TypeError(f"expected a SELECT, found {type(statement).__name__}")
    return statement


def result(select: ast.SelectStmt) -> ast.ResTarget:
    """The first (for a condition, the only) output column of *select*."""
    return items(select.targetList, ast.ResTarget)[0]


def value_of(select: ast.SelectStmt) -> ast.Node:
    """The expression *select* computes as its first output column."""
    value = result(select).val
    if value is None:
        raise TypeError("a SELECT output column without a value")
    return value


def single_value(expression: str) -> ast.Node:
    """The tree of *expression*, one SQL expression badged deparsed itself."""
    return value_of(parse_select(PREFIX + expression))


def and_parts(where: ast.Node | None) -> tuple[ast.Node, ...]:
    """The AND-ed parts of a WHERE clause (one part when it is no AND, none when there is no WHERE)."""
    if where is None:
        return ()
    if isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
        return items(where.args, ast.Node)
    return (where,)


def function_name(call: ast.FuncCall) -> FunctionName:
    """(schema or None, name) of the function *call* calls, as written."""
    names = [str(part.sval) for part in items(call.funcname, ast.String)]
    return (names[-2] if len(names) >= 2 else None, names[-1])


def column_path(node: object) -> tuple[str, ...] | None:
    """The dotted name of a column reference (``("new", "user_id")``); None for anything else, or ``*``."""
    if not isinstance(node, ast.ColumnRef):
        return None
    fields = items(node.fields, ast.Node)
    strings = tuple(str(field.sval) for field in fields if isinstance(field, ast.String))
    return strings if len(strings) == len(fields) else None


def field_name(field: ast.Node) -> str:
    """One part of a column reference's dotted name: a name, or ``*``."""
    return str(field.sval) if isinstance(field, ast.String) else "*"


def row_refs(tree: ast.Node) -> Iterator[tuple[str, str | None]]:
    """(variable, column) for every NEW/OLD reference; column None for a whole-row reference."""
    for node in walk(tree):
        if not isinstance(node, ast.ColumnRef):
            continue
        fields = items(node.fields, ast.Node)
        if not fields or not isinstance(fields[0], ast.String) or fields[0].sval not in ("new", "old"):
            continue
        column = fields[1] if len(fields) >= 2 else None
        yield str(fields[0].sval), str(column.sval) if isinstance(column, ast.String) else None


def reads_row(expression: str) -> bool:
    """Whether *expression* (deparsed by badged) reads NEW or OLD."""
    return any(var in ("new", "old") for var, _ in row_refs(single_value(expression)))


def is_deterministic(expression: ast.Node) -> bool:
    """Whether *expression*'s value depends on the row alone: no call, no subquery, no clock."""
    for node in walk(expression):
        if not isinstance(node, _DETERMINISTIC_NODES):
            return False
        if isinstance(node, ast.TypeCast) and isinstance(node.arg, ast.A_Const):
            type_names = items(node.typeName.names, ast.String) if node.typeName else ()
            if type_names and type_names[-1].sval in _CLOCK_TYPES:
                return False
    return True


def filter_aggregates(expression: ast.Node, condition: ast.Node, is_aggregate: Callable[[FunctionName], bool]
                       ) -> None:
    """Add ``FILTER (WHERE condition)`` to every aggregate computed at this level of *expression*."""
    for node in walk(expression, into_subqueries=False):
        if isinstance(node, ast.FuncCall) and node.over is None and is_aggregate(function_name(node)):
            node.agg_filter = condition if node.agg_filter is None else ast.BoolExpr(
                boolop=enums.BoolExprType.AND_EXPR, args=(node.agg_filter, condition))


def unqualified_names(select: ast.SelectStmt) -> frozenset[Name]:
    """Tables (other than the query's own WITH names), functions and types written without a schema."""
    return frozenset(name for name, _node in unqualified(select))


def unqualified(select: ast.SelectStmt) -> Iterator[tuple[Name, NamingNode]]:
    """Every node naming a table, function or type without a schema, with that name."""
    ctes = {str(node.ctename) for node in walk(select) if isinstance(node, ast.CommonTableExpr)}
    for node in list(walk(select)):  # a list: qualify_names rewrites the nodes it is given
        if isinstance(node, ast.RangeVar):
            if node.schemaname is None and str(node.relname) not in ctes:
                yield (NameKind.RELATION, str(node.relname)), node
        elif isinstance(node, ast.FuncCall):
            funcname = items(node.funcname, ast.String)
            if len(funcname) == 1:
                yield (NameKind.FUNCTION, str(funcname[0].sval)), node
        elif isinstance(node, ast.TypeName) and not node.pct_type:
            names = items(node.names, ast.String)
            if len(names) == 1:
                yield (NameKind.TYPE, str(names[0].sval)), node


def qualify_names(select: ast.SelectStmt, qualification: Qualification) -> None:
    """Write the schema *qualification* gives in front of every name ``unqualified`` finds."""
    for (kind, name), node in unqualified(select):
        schema = qualification.get((kind, name))
        if schema is None:
            continue
        if isinstance(node, ast.RangeVar):
            node.schemaname = schema
        elif isinstance(node, ast.FuncCall):
            node.funcname = (ast.String(sval=schema), ast.String(sval=name))
        else:
            node.names = (ast.String(sval=schema), ast.String(sval=name))
