"""How long and how deeply nested a condition may be, measured before pglast turns it into Python objects.

This module is pure: no database, no I/O.
"""

from __future__ import annotations

import re

from pglast.parser import ParseError, parse_sql_json

from badged.condition_tree import PREFIX

#: A condition is a line or two; anything this long is a mistake (and the whole text ends up in a trigger function).
MAX_LENGTH = 10_000
#: How deeply a condition's syntax tree may nest. pglast turns trees into Python objects by C
#: recursion that nothing bounds (a chain of 30,000 '+' crashes the process), and its deparser
#: and ``condition_tree.walk`` recurse in Python (~4 frames a level against a limit of 1,000), so
#: this is checked before either runs. Real conditions nest 5 to 15 levels.
MAX_DEPTH = 100
#: The problem with a condition that nests deeper than MAX_DEPTH.
TOO_DEEP = f"nests too deeply (more than {MAX_DEPTH} levels of calls, operators, NOT or subqueries); simplify it"
# What pglast's C parser says when a statement nests deeper than its own stacks allow.
_PARSER_OVERFLOWS = ("stack depth limit exceeded", "memory exhausted")
# One token of pglast's JSON tree: a string (group 1), a key when followed by ':' (group 2), or a bracket.
_JSON_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(:)?|[{}\[\]]')


def size_problem(written: str) -> str | None:
    """What makes *written* unsafe for pglast to turn into Python objects, or None.

    Its C parser bounds its own stack (``parse_sql_json`` reports a too deep statement as an
    error), and the JSON it returns is measured without recursion; only then may ``parse_sql``
    build the tree. A plain syntax error is no problem here: ``parse_sql`` reports it with its
    position.
    """
    if "\x00" in written:
        return "contains a NUL character (\\x00), which PostgreSQL cannot store"
    if len(written) > MAX_LENGTH:
        return f"is {len(written):,} characters long; a condition may have at most {MAX_LENGTH:,}"
    try:
        written.encode()
    except UnicodeEncodeError as exc:
        return f"contains {written[exc.start]!r}, half of a UTF-16 surrogate pair, which is not text"
    try:
        tree = parse_sql_json(PREFIX + written)
    except ParseError as exc:
        return TOO_DEEP if str(exc.args[0]).startswith(_PARSER_OVERFLOWS) else None
    return TOO_DEEP if _node_depth(tree) > MAX_DEPTH else None


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
