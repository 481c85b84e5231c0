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

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ParamSpec

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError, parse_sql_json
from pglast.stream import RawStream

from badged.names import Name, NameKind, Qualification
from badged.routines import FunctionName, RoutineKind, Routines

_PREFIX = "SELECT "

#: A condition is a line or two; anything this long is a mistake (and the whole text ends up in a trigger function).
MAX_LENGTH = 10_000
#: How deeply a condition's syntax tree may nest. pglast turns trees into Python objects by C
#: recursion that nothing bounds (a chain of 30,000 '+' crashes the process), and its deparser
#: and ``_walk`` recurse in Python (~4 frames a level against a limit of 1,000), so this is
#: checked before either runs. Real conditions nest 5 to 15 levels.
MAX_DEPTH = 100
_TOO_DEEP = f"nests too deeply (more than {MAX_DEPTH} levels of calls, operators, NOT or subqueries); simplify it"
# What pglast's C parser says when a statement nests deeper than its own stacks allow.
_PARSER_OVERFLOWS = ("stack depth limit exceeded", "memory exhausted")
# One token of pglast's JSON tree: a string (group 1), a key when followed by ':' (group 2), or a bracket.
_JSON_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(:)?|[{}\[\]]')
_P = ParamSpec("_P")

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
        scope = tuple(sorted(part for part in self.where if _reads_row(part)))
        return (self.shared_query, scope) if scope else None

    @property
    def new_columns(self) -> tuple[str, ...]:
        return tuple(sorted(col for var, col in self.row_columns if var == "new"))


def _refuse_deep_nesting(parse: Callable[_P, Condition]) -> Callable[_P, Condition]:
    """Turn a RecursionError in *parse* into a ConditionError: the net under ``_check_size``; the daemon lives on."""
    @functools.wraps(parse)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> Condition:
        try:
            return parse(*args, **kwargs)
        except RecursionError:
            raise ConditionError(_TOO_DEEP) from None
    return guarded


@_refuse_deep_nesting
def parse_condition(written: str, event: Event, qualification: Qualification | None = None) -> Condition:
    """Check *written* for a badge firing on *event*; raise ConditionError if unsafe.

    With *qualification* (see ``names``), every table, function and type it names without
    a schema is written with the schema given there.
    """
    select = _parse_single_select(written)
    names = _unqualified_names(select)
    if qualification:
        _qualify_names(select, qualification)
    target = select.targetList[0].val
    is_query = _has_query_tail(select)
    if not is_query:
        _qualify_bare_columns(target, event.changed_row)
    _reject_misused_rows(select, event)
    row_refs = frozenset(_row_refs(select))
    row_columns = frozenset((var, column) for var, column in row_refs if column is not None)
    shared_query, shared_target, where, target_calls = _shareable(select) if is_query else (None, None, (), None)
    from_table, scope_columns = _scope(select, event.changed_row) if is_query else (None, frozenset())
    calls = frozenset(_function_name(node) for node in _walk(select) if isinstance(node, ast.FuncCall))
    has_subquery = any(isinstance(node, ast.SubLink) for node in _walk(target))
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
        target_calls=target_calls or frozenset(),
        runs_query=is_query or has_subquery,
        calls=calls,
        row_local=not is_query and not has_subquery and not calls,
        from_table=from_table,
        scope_columns=scope_columns,
        whole_row=any(column is None for _, column in row_refs),
        has_subquery=any(isinstance(node, ast.SubLink) for node in _walk(select)),
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


def _unqualified_names(select: Any) -> frozenset[Name]:
    """Tables (other than the query's own WITH names), functions and types written without a schema."""
    return frozenset(name for name, _node in _unqualified(select))


def _unqualified(select: Any) -> Iterator[tuple[Name, Any]]:
    """Every node naming a table, function or type without a schema, with that name."""
    ctes = {str(node.ctename) for node in _walk(select) if isinstance(node, ast.CommonTableExpr)}
    for node in list(_walk(select)):
        parts: Any = (node.funcname if isinstance(node, ast.FuncCall)
                      else node.names if isinstance(node, ast.TypeName) and not node.pct_type else None)
        if isinstance(node, ast.RangeVar) and node.schemaname is None and str(node.relname) not in ctes:
            yield (NameKind.RELATION, str(node.relname)), node
        elif isinstance(node, ast.FuncCall) and len(parts) == 1:
            yield (NameKind.FUNCTION, str(parts[0].sval)), node
        elif isinstance(node, ast.TypeName) and parts and len(parts) == 1:
            yield (NameKind.TYPE, str(parts[0].sval)), node


def _qualify_names(select: Any, qualification: Qualification) -> None:
    """Write the schema *qualification* gives in front of every name ``_unqualified`` finds."""
    for (kind, name), node in _unqualified(select):
        schema = qualification.get((kind, name))
        if schema is None:
            continue
        if kind is NameKind.RELATION:
            node.schemaname = schema
        elif kind is NameKind.FUNCTION:
            node.funcname = (ast.String(sval=schema), ast.String(sval=name))
        else:
            node.names = (ast.String(sval=schema), ast.String(sval=name))


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
        expression = _single_value(value)
        rest = [_single_value(part) for part in where if part not in common]
        if rest:
            _filter_aggregates(expression, rest[0] if len(rest) == 1 else
                               ast.BoolExpr(boolop=enums.BoolExprType.AND_EXPR, args=tuple(rest)), is_aggregate)
        values.append(expression)
    select: Any = parse_sql(shared_query)[0].stmt
    if common:
        parts = tuple(_single_value(part) for part in common)
        select.whereClause = parts[0] if len(parts) == 1 else ast.BoolExpr(
            boolop=enums.BoolExprType.AND_EXPR, args=parts)
    select.targetList = (ast.ResTarget(val=ast.A_ArrayExpr(elements=tuple(values))),)
    return _deparse(select)


def _filter_aggregates(expression: Any, condition: Any, is_aggregate: Callable[[FunctionName], bool]) -> None:
    """Add ``FILTER (WHERE condition)`` to every aggregate computed at this level of *expression*."""
    for node in _walk(expression, into_subqueries=False):
        if isinstance(node, ast.FuncCall) and node.over is None and is_aggregate(_function_name(node)):
            node.agg_filter = condition if node.agg_filter is None else ast.BoolExpr(
                boolop=enums.BoolExprType.AND_EXPR, args=(node.agg_filter, condition))


def _reads_row(expression: str) -> bool:
    return any(var in ("new", "old") for var, _ in _row_refs(_single_value(expression)))


def _single_value(expression: str) -> Any:
    select: Any = parse_sql(_PREFIX + expression)[0].stmt
    return select.targetList[0].val


def _shareable(select: Any) -> tuple[str | None, str | None, tuple[str, ...], frozenset[FunctionName] | None]:
    """(its FROM, its value, its WHERE parts, the calls of its value) when *select* may return one row.

    Whether it does (its value is an aggregate) is for the database to say: see
    ``Condition.share_key``. A window call (``OVER``) at this level rules it out here.
    """
    if not select.fromClause or any(getattr(select, clause, None) for clause in _NOT_SHAREABLE):
        return None, None, (), None
    target = select.targetList[0].val
    calls = [node for node in _walk(target, into_subqueries=False) if isinstance(node, ast.FuncCall)]
    if not calls or any(call.over is not None for call in calls):
        return None, None, (), None
    where: Any = select.whereClause
    if where is None:
        parts: tuple[Any, ...] = ()
    elif isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
        parts = tuple(where.args or ())
    else:
        parts = (where,)
    shell: Any = ast.SelectStmt(fromClause=select.fromClause)
    return (_deparse(shell), _deparse(target), tuple(_deparse(part) for part in parts),
            frozenset(_function_name(call) for call in calls))


def _function_name(call: Any) -> FunctionName:
    names = [str(part.sval) for part in call.funcname]
    return (names[-2] if len(names) >= 2 else None, names[-1])


def _scope(select: Any, row: str) -> tuple[tuple[str | None, str] | None, frozenset[str]]:
    """The one table a query tail reads, and its columns ``c`` that its WHERE equates with ``<row>.c``.

    A query over ``dummy_sketch WHERE user_id = NEW.user_id`` reads only rows of the
    changed row's user: two writes of different users cannot change what the other's
    check reads. Joins, several FROM items and subqueries in FROM give no table.
    """
    items: Any = select.fromClause or ()
    if len(items) != 1 or not isinstance(items[0], ast.RangeVar) or items[0].catalogname:
        return None, frozenset()
    table: Any = items[0]
    names = {str(table.alias.aliasname) if table.alias else str(table.relname)}
    where: Any = select.whereClause
    parts: Any = where.args if isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR \
        else ((where,) if where is not None else ())
    columns = set()
    for part in parts:
        name: Any = part.name if isinstance(part, ast.A_Expr) else ()
        if not (isinstance(part, ast.A_Expr) and part.kind == enums.A_Expr_Kind.AEXPR_OP
                and len(name) == 1 and name[0].sval == "="):
            continue
        sides = [_column_path(part.lexpr), _column_path(part.rexpr)]
        for mine, theirs in (sides, sides[::-1]):
            if mine is None or theirs is None or len(theirs) != 2 or theirs[0] != row:
                continue
            if (len(mine) == 1 or (len(mine) == 2 and mine[0] in names)) and mine[-1] == theirs[1]:
                columns.add(mine[-1])
    return (table.schemaname, str(table.relname)), frozenset(columns)


def _column_path(node: Any) -> tuple[str, ...] | None:
    fields: Any = node.fields if isinstance(node, ast.ColumnRef) else None
    if fields is None or not all(isinstance(f, ast.String) for f in fields):
        return None
    return tuple(str(f.sval) for f in fields)


def _check_size(written: str) -> None:
    """Refuse what pglast cannot safely turn into Python objects, before it does.

    Its C parser bounds its own stack (``parse_sql_json`` reports a too deep statement as an
    error), and the JSON it returns is measured without recursion; only then does ``parse_sql``
    build the tree.
    """
    if "\x00" in written:
        raise ConditionError("contains a NUL character (\\x00), which PostgreSQL cannot store")
    if len(written) > MAX_LENGTH:
        raise ConditionError(f"is {len(written):,} characters long; a condition may have at most {MAX_LENGTH:,}")
    try:
        written.encode()
    except UnicodeEncodeError as exc:
        raise ConditionError(f"contains {written[exc.start]!r}, half of a UTF-16 surrogate pair, which is not text"
                             ) from None
    try:
        tree = parse_sql_json(_PREFIX + written)
    except ParseError as exc:
        if str(exc.args[0]).startswith(_PARSER_OVERFLOWS):
            raise ConditionError(_TOO_DEEP) from None
        return  # a plain syntax error: parse_sql reports it with its position
    if _node_depth(tree) > MAX_DEPTH:
        raise ConditionError(_TOO_DEEP)


def _node_depth(tree: str) -> int:
    """How deeply nodes nest in pglast's JSON *tree* (a node is a key such as ``"A_Expr":``), without recursion."""
    opened: list[bool] = []  # per open bracket: True when it holds a node's fields
    depth = deepest = 0
    node = False
    for token in _JSON_TOKEN.finditer(tree):
        text = token.group()
        if text in ("{", "["):
            opened.append(node)
            depth += node
            deepest = max(deepest, depth)
            node = False
        elif text in ("}", "]"):
            depth -= opened.pop()
        else:
            node = token.group(2) is not None and token.group(1)[:1].isupper()
    return deepest


def _parse_single_select(written: str) -> Any:
    if not written.strip():
        raise ConditionError("is empty")
    _check_size(written)
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
