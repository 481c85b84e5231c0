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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from badged.condition import Condition, ConditionError, Event, parse_condition
from badged.errors import BADGES_HINT, Problem, SpecError

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class BadgeSpec(BaseModel):
    """One badge exactly as written in badge.json."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    code: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")]
    condition: Annotated[str, Field(min_length=1)]
    trigger_condition: Annotated[Event, BeforeValidator(_lower)]
    trigger_table: Annotated[str, Field(min_length=1)]
    user_field: Annotated[str, Field(min_length=1)]


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

    @property
    def spec(self) -> dict[str, str]:
        """The badge as badge.json would write it (conditions as written)."""
        return {
            "name": self.name,
            "code": self.code,
            "condition": self.condition.written,
            "trigger_condition": self.event.value,
            "trigger_table": str(self.table),
            "user_field": self.user_field,
        }


def load_badges(path: Path, *, prefix: str, allow_empty: bool = False) -> tuple[Badge, ...]:
    """Read and validate badge.json at *path*."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path.absolute()), [Problem(f"file not found; {BADGES_HINT}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [Problem(f"cannot read: {exc}")]) from None
    return parse_badges(text, source=str(path), prefix=prefix, allow_empty=allow_empty)


def parse_badges(text: str, *, source: str, prefix: str, allow_empty: bool = False) -> tuple[Badge, ...]:
    """Validate badge.json's *text*; raise SpecError listing every problem."""
    items = _parse_json(text, source)
    problems: list[Problem] = []
    badges: list[Badge] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        badge = _parse_badge(index, item, prefix, problems)
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


def _parse_json(text: str, source: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SpecError(source, [Problem(f"invalid JSON at {where}: {exc.msg}")]) from None
    if not isinstance(data, list):
        raise SpecError(source, [Problem(f"must be a JSON list of badges, not a JSON {_json_type(data)}")])
    return data


def _json_type(value: Any) -> str:
    return {dict: "object", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def _parse_badge(index: int, item: Any, prefix: str, problems: list[Problem]) -> Badge | None:
    if not isinstance(item, dict):
        problems.append(Problem(f"must be a JSON object, not a JSON {_json_type(item)}", index))
        return None
    code = item.get("code") if isinstance(item.get("code"), str) else None
    try:
        spec = BadgeSpec.model_validate(item)
    except ValidationError as exc:
        problems.extend(_explain(error, index, code) for error in exc.errors())
        return None
    found = len(problems)
    problems.extend(_name_length_problems(spec, index, prefix))
    table = _parse_table(spec, index, problems)
    user_field = _parse_column(spec, index, problems)
    try:
        condition = parse_condition(spec.condition, spec.trigger_condition)
    except ConditionError as exc:
        problems.append(Problem(f"{spec.trigger_condition.value} badge condition {exc}", index, spec.code, "condition"))
        return None
    if len(problems) > found or table is None or user_field is None:
        return None
    return Badge(index, spec.code, spec.name, spec.trigger_condition, table, user_field, condition)


def _explain(error: Any, index: int, code: str | None) -> Problem:
    """Turn one pydantic error into a sentence that names badge and field."""
    field = str(error["loc"][0]) if error["loc"] else None
    kind = error["type"]
    if kind == "extra_forbidden":
        guess = difflib.get_close_matches(field or "", FIELDS, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else f"; known fields: {', '.join(FIELDS)}"
        return Problem(f"unknown field{hint}", index, code, field)
    if kind == "missing":
        return Problem("is required", index, code, field)
    if kind == "enum":
        return Problem(f"must be one of insert, update, delete (got {error['input']!r})", index, code, field)
    if kind == "string_pattern_mismatch":
        allowed = "may contain only letters, digits, '_' and '-' (and must not start with '-')"
        return Problem(allowed, index, code, field)
    if kind == "string_type":
        return Problem("must be a string", index, code, field)
    return Problem(str(error["msg"]).lower(), index, code, field)


def _name_length_problems(spec: BadgeSpec, index: int, prefix: str) -> list[Problem]:
    size = len((prefix + spec.code).encode())
    if size <= MAX_IDENTIFIER_BYTES:
        return []
    room = MAX_IDENTIFIER_BYTES - len(prefix.encode())
    return [Problem(
        f"makes the PostgreSQL name {prefix + spec.code!r} {size} bytes long; names hold at most "
        f"{MAX_IDENTIFIER_BYTES} bytes, so shorten the code to {room} bytes or fewer",
        index, spec.code, "code",
    )]


def _parse_table(spec: BadgeSpec, index: int, problems: list[Problem]) -> TableName | None:
    """Parse ``table`` or ``schema.table`` with PostgreSQL's rules for identifiers."""
    range_var = _parse_single(f"SELECT FROM {spec.trigger_table}", ast.RangeVar)
    if range_var is None or range_var.catalogname or range_var.alias or not range_var.inh:
        problems.append(Problem(
            f"must be a table name such as auth_user or public.auth_user (got {spec.trigger_table!r})",
            index, spec.code, "trigger_table",
        ))
        return None
    return TableName(range_var.schemaname, range_var.relname)


def _parse_column(spec: BadgeSpec, index: int, problems: list[Problem]) -> str | None:
    column = _parse_single(f"SELECT {spec.user_field}", ast.ColumnRef)
    if column is None or len(column.fields) != 1 or not isinstance(column.fields[0], ast.String):
        problems.append(Problem(
            f"must be one column name of the trigger table, such as user_id (got {spec.user_field!r})",
            index, spec.code, "user_field",
        ))
        return None
    return str(column.fields[0].sval)


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
