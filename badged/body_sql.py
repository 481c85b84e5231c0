"""The pieces every part of a trigger function's body is composed of: indented templates, code arrays, change tests.

Only badged's own template text is ever indented, never a condition, so a string
literal in a condition keeps its exact bytes.

Pure: no database.
"""

from __future__ import annotations

import re
import textwrap

from psycopg import sql

from badged.marks import text


def block(template: str, indent: int, *, omit: tuple[str, ...] = ()) -> sql.SQL:
    """One of badged's own plpgsql templates (never user input) at *indent* spaces.

    A line holding nothing but ``{name}`` is a nested block that brings its own
    indentation, so it is left as it is (or dropped, when *name* is in *omit*): only
    template text is ever indented, never what is inserted into it.
    """
    lines = []
    for line in textwrap.dedent(template).strip("\n").splitlines():
        alone = _PLACEHOLDER_LINE.fullmatch(line)
        if alone and alone.group(1) in omit:
            continue
        lines.append(line if alone or not line else " " * indent + line)
    return sql.SQL("\n".join(lines))


_PLACEHOLDER_LINE = re.compile(r"\{(\w+)\}")


def code_array(codes: list[str] | tuple[str, ...]) -> sql.Composed:
    """*codes* as a ``text[]`` literal."""
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, codes)))


def changed(columns: tuple[str, ...]) -> str:
    """True when any of *columns* changed its stored value between OLD and NEW.

    Compared as binary images (``record_image_ne``, what ``REFRESH MATERIALIZED VIEW
    CONCURRENTLY`` uses), which needs no ``=`` operator: json, point and xml have none,
    and ``IS DISTINCT FROM`` on them cannot even be created. Values equal by ``=`` but
    stored differently (``1.0`` and ``1.00``, json whitespace) count as changed: one
    more check, never a missed one.
    """
    def row(variable: str) -> sql.Composed:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.SQL(variable), sql.Identifier(column)) for column in columns))

    return text(sql.SQL("pg_catalog.record_image_ne({}, {})").format(row("OLD"), row("NEW")))
