"""badge.json → validated, frozen Badge models.

The file keeps the original django-pg-badges format: a JSON list of objects with
``name``, ``code``, ``condition``, ``trigger_condition``, ``trigger_table`` and
``user_field``. Loading collects *every* problem (JSON syntax with line and column,
missing and unknown fields with a did-you-mean, bad values, duplicate codes, names
too long for PostgreSQL, unsafe conditions) and raises one SpecError listing them,
so a user fixes the file in one pass.

Pure apart from reading the file in ``load_badges``.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from badged.condition import MAX_LENGTH, Condition, ConditionError, Event, parse_condition
from badged.errors import BADGES_HINT, Problem, SpecError
from badged.spec_text import describe, identifiers, invisible, invisible_in_names, mixed_scripts, one_line, short, shown

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63
#: trigger_table and user_field hold one or two identifiers; this bounds them generously (quoted, schema-qualified)
#: and keeps what pglast parses small.
MAX_NAME_TEXT = 300
# Where PostgreSQL keeps its own catalogs (pg_catalog, pg_toast, pg_temp_N…): never a badge's table.
_SYSTEM_SCHEMA_PREFIX = "pg_"
_INFORMATION_SCHEMA = "information_schema"


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class BadgeSpec(BaseModel):
    """One badge exactly as written in badge.json."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    # (at most 63: no prefix leaves room for more; _name_length_problems says how much room it does leave)
    code: Annotated[str, Field(min_length=1, max_length=MAX_IDENTIFIER_BYTES, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")]
    condition: Annotated[str, Field(min_length=1)]
    trigger_condition: Annotated[Event, BeforeValidator(_lower)]
    trigger_table: Annotated[str, Field(min_length=1, max_length=MAX_NAME_TEXT)]
    user_field: Annotated[str, Field(min_length=1, max_length=MAX_NAME_TEXT)]


FIELDS = tuple(BadgeSpec.model_fields)


@dataclass(frozen=True, order=True)
class TableName:
    """A table as badge.json names it; ``schema`` is None when resolved by search_path."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class Badge:
    """A validated badge: the spec plus its parsed table, column and condition."""

    index: int
    code: str
    name: str
    event: Event
    table: TableName
    user_field: str
    condition: Condition


def load_badges(path: Path, *, prefix: str, allow_empty: bool = False, schema: str | None = None
                ) -> tuple[Badge, ...]:
    """Read and validate badge.json at *path* (see ``parse_badges``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path.absolute()), [Problem(f"file not found; {BADGES_HINT}")]) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise SpecError(str(path), [Problem(
            f"is not UTF-8: byte {exc.object[exc.start]:#04x} on line {line} (offset {exc.start:,}) cannot be "
            "decoded; save the file as UTF-8"
        )]) from None
    except OSError as exc:
        raise SpecError(str(path), [Problem(f"cannot read: {exc}")]) from None
    return parse_badges(text, source=str(path), prefix=prefix, allow_empty=allow_empty, schema=schema)


def parse_badges(text: str, *, source: str, prefix: str, allow_empty: bool = False, schema: str | None = None
                 ) -> tuple[Badge, ...]:
    """Validate badge.json's *text*; raise SpecError listing every problem.

    *schema* is badged's own schema: a badge may not watch a table written in it (nor in
    PostgreSQL's system schemas). Without it only tables that resolve there are refused,
    at reconcile time (``reconcile.check_against_database``).
    """
    items = _parse_json(text, source)
    problems: list[Problem] = []
    badges: list[Badge] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        badge = _parse_badge(index, item, prefix, schema, problems)
        if badge is None:
            continue
        if badge.code in seen:
            duplicate = f"duplicate code, also used by badge #{seen[badge.code]}"
            problems.append(Problem(duplicate, index, badge.code, "code"))
            continue
        seen[badge.code] = index
        badges.append(badge)
    if not items and not allow_empty:
        problems.append(Problem(
            "the list of badges is empty; refusing to drop every badge "
            "(pass --allow-empty if that is really what you want)"
        ))
    if problems:
        raise SpecError(source, problems)
    return tuple(badges)


class _JSONObject(dict[str, Any]):
    """A JSON object that remembers the keys written in it more than once (``json.loads`` keeps the last value)."""

    duplicates: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JSONObject:
        made = cls(pairs)
        if len(made) < len(pairs):
            made.duplicates = tuple((key, n) for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        return made


def _parse_json(text: str, source: str) -> list[Any]:
    if text.startswith("\ufeff"):
        raise SpecError(source, [Problem("starts with a byte order mark (U+FEFF); save it as UTF-8 without BOM")])
    try:
        data = json.loads(text, object_pairs_hook=_JSONObject.from_pairs)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SpecError(source, [Problem(f"invalid JSON at {where}: {exc.msg}")]) from None
    except RecursionError:  # json's decoder recurses once per nested [ or {
        raise SpecError(source, [Problem("invalid JSON: it nests too deeply; badge.json is a list of flat objects")]
                        ) from None
    except ValueError:  # the only other one: a number longer than Python converts (sys.set_int_max_str_digits)
        raise SpecError(source, [Problem(
            f"invalid JSON: a number has more than {sys.get_int_max_str_digits():,} digits"
        )]) from None
    if not isinstance(data, list):
        raise SpecError(source, [Problem(f"must be a JSON list of badges, not a JSON {_json_type(data)}")])
    return data


def _json_type(value: Any) -> str:
    return {_JSONObject: "object", dict: "object", list: "list", str: "string", int: "number", float: "number",
            bool: "boolean"}.get(type(value), "null")


def _parse_badge(index: int, item: Any, prefix: str, schema: str | None, problems: list[Problem]) -> Badge | None:
    if not isinstance(item, dict):
        problems.append(Problem(f"must be a JSON object, not a JSON {_json_type(item)}", index))
        return None
    code = short(item["code"]) if isinstance(item.get("code"), str) else None
    found = len(problems)
    problems.extend(
        Problem(f"is written {count} times in this badge; JSON keeps only the last value, so remove the others",
                index, code, short(key))
        for key, count in getattr(item, "duplicates", ())
    )
    try:
        spec = BadgeSpec.model_validate(item)
    except ValidationError as exc:
        problems.extend(_explain(error, index, code) for error in exc.errors())
        return None
    unreadable = _character_problems(spec, index)
    problems.extend(unreadable)
    problems.extend(_name_length_problems(spec, index, prefix))
    bad_fields = {problem.field for problem in unreadable}
    table = _parse_table(spec, index, schema, problems) if "trigger_table" not in bad_fields else None
    user_field = _parse_column(spec, index, problems) if "user_field" not in bad_fields else None
    try:
        condition = parse_condition(spec.condition, spec.trigger_condition)
    except ConditionError as exc:
        problems.append(Problem(f"{spec.trigger_condition.value} badge condition {one_line(str(exc))}",
                                index, spec.code, "condition"))
        return None
    if len(problems) > found or table is None or user_field is None:
        return None
    return Badge(index, spec.code, spec.name, spec.trigger_condition, table, user_field, condition)


def _explain(error: Any, index: int, code: str | None) -> Problem:
    """Turn one pydantic error into a sentence that names badge and field."""
    field = short(str(error["loc"][0])) if error["loc"] else None
    kind = error["type"]
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(field or "", FIELDS, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else f"; known fields: {', '.join(FIELDS)}"
        return Problem(f"unknown field{hint}" if field else f"a field with an empty name{hint}", index, code, field)
    if kind == "missing":
        return Problem("is required", index, code, field)
    if kind == "enum":
        return Problem(f"must be one of insert, update, delete (got {shown(error['input'])})", index, code, field)
    if kind == "string_pattern_mismatch":
        allowed = "may contain only letters, digits, '_' and '-' (and must not start with '-')"
        return Problem(allowed, index, code, field)
    if kind == "string_type":
        return Problem(f"must be a string, not a JSON {_json_type(error['input'])}", index, code, field)
    if kind == "string_too_short":
        return Problem("must not be empty (or only spaces)", index, code, field)
    if kind == "string_too_long":
        return Problem(f"is {len(error['input']):,} characters long; at most {error['ctx']['max_length']} are allowed",
                       index, code, field)
    if kind == "string_unicode":
        return Problem("contains half of a UTF-16 surrogate pair (a lone \\ud800-\\udfff escape), which is not text",
                       index, code, field)
    return Problem(str(error["msg"]).lower(), index, code, field)


def _character_problems(spec: BadgeSpec, index: int) -> list[Problem]:
    """Characters nobody can see or PostgreSQL cannot store, in the fields that name things.

    In the condition only names matter (line breaks and tabs are fine, and ``parse_condition``
    refuses NUL); the code's pattern allows only ASCII.
    """
    problems = []
    for field, allowed in (("name", "a badge name is one line of printable text"),
                           ("trigger_table", "a table name has none"), ("user_field", "a column name has none")):
        value: str = getattr(spec, field)
        odd = next((ch for ch in value if invisible(ch)), None)
        mixed = mixed_scripts(value) if field != "name" else None
        if odd is not None:
            problems.append(Problem(f"contains the invisible or control character {describe(odd)}; {allowed}",
                                    index, spec.code, field))
        elif mixed:
            problems.append(Problem(mixed, index, spec.code, field))
    # a longer one parse_condition refuses, without our scanning a megabyte
    hidden = (invisible_in_names(spec.condition) or mixed_scripts(spec.condition)
              if len(spec.condition) <= MAX_LENGTH else None)
    if hidden:
        problems.append(Problem(hidden, index, spec.code, "condition"))
    return problems


def _name_length_problems(spec: BadgeSpec, index: int, prefix: str) -> list[Problem]:
    size = len((prefix + spec.code).encode())
    if size <= MAX_IDENTIFIER_BYTES:
        return []
    room = MAX_IDENTIFIER_BYTES - len(prefix.encode())
    return [Problem(
        f"makes the PostgreSQL name {shown(prefix + spec.code)} {size} bytes long; names hold at most "
        f"{MAX_IDENTIFIER_BYTES} bytes, so shorten the code to {room} bytes or fewer",
        index, spec.code, "code",
    )]


def _parse_table(spec: BadgeSpec, index: int, schema: str | None, problems: list[Problem]) -> TableName | None:
    """Parse ``table`` or ``schema.table`` with PostgreSQL's rules for identifiers."""
    range_var = _parse_single(f"SELECT FROM {spec.trigger_table}", ast.RangeVar)
    if range_var is None or range_var.catalogname or range_var.alias or not range_var.inh:
        problems.append(Problem(
            f"must be a table name such as auth_user or public.auth_user (got {spec.trigger_table!r})",
            index, spec.code, "trigger_table",
        ))
        return None
    table = TableName(range_var.schemaname, range_var.relname)
    refusal = _long_identifier(spec.trigger_table) or _foreign_schema(table, schema)
    if refusal:
        problems.append(Problem(refusal, index, spec.code, "trigger_table"))
        return None
    return table


def _foreign_schema(table: TableName, schema: str | None) -> str | None:
    """Why *table* is not the application's to watch: it is in badged's own schema or a system one."""
    if table.schema is not None and table.schema == schema:
        return (f"{table} is in badged's own schema {schema!r}; a badge watches one of the application's tables "
                "(badged writes its own tables from its triggers)")
    if table.schema is not None and (table.schema.startswith(_SYSTEM_SCHEMA_PREFIX)
                                     or table.schema == _INFORMATION_SCHEMA):
        return f"{table} is in the system schema {table.schema!r}; a badge watches one of the application's tables"
    return None


def _parse_column(spec: BadgeSpec, index: int, problems: list[Problem]) -> str | None:
    column = _parse_single(f"SELECT {spec.user_field}", ast.ColumnRef)
    if column is None or len(column.fields) != 1 or not isinstance(column.fields[0], ast.String):
        problems.append(Problem(
            f"must be one column name of the trigger table, such as user_id (got {spec.user_field!r})",
            index, spec.code, "user_field",
        ))
        return None
    too_long = _long_identifier(spec.user_field)
    if too_long:
        problems.append(Problem(too_long, index, spec.code, "user_field"))
        return None
    return str(column.fields[0].sval)


def _long_identifier(text: str) -> str | None:
    """Why *text* names something PostgreSQL would silently cut short, or None.

    pglast, like PostgreSQL, truncates identifiers to 63 bytes (with a mere NOTICE), so the
    parsed name cannot tell; the scanner's tokens still hold them as written.
    """
    for name in identifiers(text):
        size = len(name.encode())
        if size > MAX_IDENTIFIER_BYTES:
            return (f"names {shown(name)}, {size} bytes long; PostgreSQL silently cuts names to "
                    f"{MAX_IDENTIFIER_BYTES} bytes, so shorten it")
    return None


def _parse_single(statement: str, node_type: type[ast.Node]) -> Any:
    """Return the one FROM item / target of *statement* if it is exactly a *node_type*."""
    try:
        parsed = parse_sql(statement)
    except ParseError:
        return None
    if len(parsed) != 1 or not isinstance(parsed[0].stmt, ast.SelectStmt):
        return None
    select = parsed[0].stmt
    if node_type is ast.RangeVar:
        items = select.fromClause or ()
        other = select.targetList or select.whereClause
    else:
        items = tuple(target.val for target in select.targetList or ()) if not select.fromClause else ()
        other = select.whereClause
    if len(items) != 1 or other or not isinstance(items[0], node_type):
        return None
    return items[0]
