"""``badged explain``: which comparisons a condition is made of, and how an explanation reads. Pure.

A condition's value is a boolean made of comparisons (``count(id) >= 5``, ``hit_views > 1000``) joined by
AND, OR and NOT. Explaining it for a user means evaluating each comparison's two sides and itself, so the
answer says ``count(id) >= 5: 3 >= 5 → false`` instead of just "no". For the query shape (``count(id) >= 5
from dummy_sketch where …``) each side is evaluated by the condition's own query with that side as its
value, so it reads exactly the rows the condition reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pglast import ast, enums

from badged.condition import Condition
from badged.condition_tree import column_path, deparse, function_name, parse_select, result, value_of, walk
from badged.routines import FunctionName

_COMPARISONS = frozenset({"=", "<>", "!=", "<", ">", "<=", ">="})
_PREFIX = "SELECT "


@dataclass(frozen=True)
class Term:
    """One comparison of a condition, with SQL that evaluates its sides and itself for one row."""

    #: as the condition has it (deparsed: names qualified, NEW/OLD as "new"/"old")
    text: str
    operator: str
    left: str
    right: str
    whole: str


@dataclass(frozen=True)
class TermValue:
    term: Term
    left: Any = None
    right: Any = None
    whole: Any = None
    #: what PostgreSQL said when evaluating it failed (a division by zero, a bad cast…)
    error: str | None = None


@dataclass(frozen=True)
class Explanation:
    """Why *user* holds *badge* or not."""

    badge: str
    name: str
    user: str
    held_since: datetime | None = None
    #: how a write reaches the check: ``insert of public.dummy_sketch``, ``update of hit_views on …``
    trigger: str = ""
    #: the row NEW/OLD stands for: the user's most recent one, or one with only the user's column set
    row: str = ""
    condition: str = ""
    value: Any = None
    terms: tuple[TermValue, ...] = ()
    error: str | None = None


IsAggregate = Callable[[FunctionName], bool]


def terms_of(condition: Condition, is_aggregate: IsAggregate = lambda name: False) -> tuple[Term, ...]:
    """The comparisons of *condition*'s boolean structure, in the order they are written.

    *is_aggregate* says which functions the database knows as aggregates (``routines``): in the query shape,
    a side reading the query's rows (its table's columns, an aggregate) is evaluated by the query; any other
    (a constant, a function of NEW) on its own, as the query would compute it once.
    """
    tree = _tree(condition.expression)
    subquery = _subquery(tree)
    count = sum(1 for _ in _comparisons(value_of(subquery) if subquery else tree))
    return tuple(_term(condition.expression, index, is_aggregate) for index in range(count))


def _tree(expression: str) -> ast.Node:
    return value_of(parse_select(_PREFIX + expression))


def _subquery(tree: ast.Node) -> ast.SelectStmt | None:
    """The query of the query shape (a scalar subquery), or None for a plain expression."""
    if isinstance(tree, ast.SubLink) and tree.subLinkType == enums.SubLinkType.EXPR_SUBLINK \
            and isinstance(tree.subselect, ast.SelectStmt):
        return tree.subselect
    return None


def _comparisons(node: ast.Node) -> Iterator[ast.A_Expr]:
    """Comparisons reachable through AND, OR and NOT (not inside function calls or subqueries)."""
    if isinstance(node, ast.BoolExpr):
        for argument in node.args or ():
            if isinstance(argument, ast.Node):
                yield from _comparisons(argument)
    elif isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP and _operator(node) in _COMPARISONS \
            and node.lexpr is not None and node.rexpr is not None:
        yield node


def _operator(node: ast.A_Expr) -> str:
    names = [str(part.sval) for part in node.name or () if isinstance(part, ast.String)]
    return names[-1] if names else ""


def _term(expression: str, index: int, is_aggregate: IsAggregate) -> Term:
    """The *index*-th comparison, and SQL for its sides: each from a fresh tree, so nothing is shared."""

    def side(pick: str) -> str:
        tree = _tree(expression)
        subquery = _subquery(tree)
        comparison = list(_comparisons(value_of(subquery) if subquery else tree))[index]
        sides = {"left": comparison.lexpr, "right": comparison.rexpr}
        picked = sides.get(pick)
        chosen: ast.Node = picked if isinstance(picked, ast.Node) else comparison
        if subquery is None or not _reads_the_query(chosen, is_aggregate):
            return deparse(chosen)  # a constant or the changed row's columns: no need for the query's rows
        result(subquery).val = chosen
        return f"({deparse(subquery)})"

    tree = _tree(expression)
    subquery = _subquery(tree)
    comparison = list(_comparisons(value_of(subquery) if subquery else tree))[index]
    # shown without the pg_catalog. that qualification wrote for safety: the reader wrote count(), not that
    text = deparse(comparison).replace("pg_catalog.", "")
    return Term(text=text, operator=_operator(comparison), left=side("left"), right=side("right"), whole=side("whole"))


def _reads_the_query(node: ast.Node, is_aggregate: IsAggregate) -> bool:
    """Whether *node* reads the query's rows: a column of its FROM, or an aggregate (not in a subquery of its own)."""
    for part in walk(node, into_subqueries=False):
        if isinstance(part, ast.ColumnRef) and (column_path(part) or ("",))[0] not in ("new", "old"):
            return True
        if isinstance(part, ast.FuncCall) and (part.agg_star or part.agg_distinct or part.agg_filter is not None
                                               or is_aggregate(function_name(part))):
            return True
    return False


def shown(value: Any) -> str:
    """A value as SQL writes it: NULL, true/false, quoted text, numbers and times as they print."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def explanation_text(explanations: list[Explanation]) -> str:
    lines: list[str] = []
    for item in explanations:
        held = f"held since {item.held_since:%Y-%m-%d %H:%M:%S %Z}" if item.held_since else "not held"
        lines.append(f"{item.badge} ({item.name}) for user {item.user}: {held}")
        if item.trigger:
            lines.append(f"  checked on {item.trigger}")
        if item.condition:
            lines.append(f"  condition: {item.condition}")
        if item.row:
            lines.append(f"  evaluated on {item.row}")
        for term in item.terms:
            value = (f"error: {term.error}" if term.error is not None else
                     f"{shown(term.left)} {term.term.operator} {shown(term.right)} → {shown(term.whole)}")
            lines.append(f"    {term.term.text}: {value}")
        if item.error is not None:
            lines.append(f"  error: {item.error}")
        else:
            lines.append(f"  value: {shown(item.value)}"
                         + ("" if item.value is True or item.held_since else " (a check now would not award it)")
                         + (" (a check now would award it)" if item.value is True and not item.held_since else ""))
    return "\n".join(lines)


def explanation_json(explanations: list[Explanation]) -> str:
    def plain(value: Any) -> Any:
        return value if value is None or isinstance(value, bool | int | float | str) else str(value)

    return json.dumps([{
        "badge": item.badge, "name": item.name, "user": item.user, "held": item.held_since is not None,
        "held_since": item.held_since.isoformat() if item.held_since else None, "trigger": item.trigger,
        "condition": item.condition, "row": item.row, "value": plain(item.value), "error": item.error,
        "terms": [{"term": t.term.text, "left": plain(t.left), "operator": t.term.operator, "right": plain(t.right),
                   "value": plain(t.whole), "error": t.error} for t in item.terms],
    } for item in explanations], indent=2)
