"""``badged test``: test files for badge.json, read and judged. Pure.

A test file (``*.test.yaml``, ``*.test.yml`` or ``*.test.json``, next to badge.json) gives a schema, steps
of writes, and the awards expected after each step::

    schema: schema.sql              # SQL run first (path relative to this file); or --schema-from DSN
    badges: badge.json              # default: the --badges file
    users: {ann: 1, bob: 2}         # names for user ids in expect / expect_not (optional)
    steps:
      - name: ann posts five sketches
        insert:
          dummy_sketch: [{user_id: 1}, {user_id: 1}, {user_id: 1}, {user_id: 1}, {user_id: 1}]
        expect: {ann: [collector]}   # ann holds at least these after the step
        expect_not: {bob: [collector]}
      - update: {dummy_sketch: {set: {hit_views: 1500}, where: {user_id: 1}}}
      - delete: {dummy_sketch: {where: {user_id: 2}}}
      - sql: UPDATE auth_user SET last_login = now()

Each step is one transaction; its writes run in the order insert, update, delete, sql. Values are passed
as parameters, tables and columns as identifiers (``schema.table`` allowed): a test file never pastes SQL
except in ``sql``, which is the test author's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from badged.errors import ConfigError

#: the names ``badged test`` looks for in a folder
TEST_FILE_SUFFIXES = (".test.yaml", ".test.yml", ".test.json")

Row = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Update(_Strict):
    set: dict[str, Any] = Field(min_length=1)
    where: dict[str, Any] = Field(default_factory=dict)


class Delete(_Strict):
    where: dict[str, Any] = Field(default_factory=dict)


class BadgeTestStep(_Strict):
    """One transaction of writes, and what must (not) be held after it."""

    name: str | None = None
    insert: dict[str, list[Row]] = Field(default_factory=dict)
    update: dict[str, Update] = Field(default_factory=dict)
    delete: dict[str, Delete] = Field(default_factory=dict)
    sql: str | None = None
    #: who (a name of ``users``, or a user id as awards store it) holds at least these codes after the step
    expect: dict[str | int, list[str]] = Field(default_factory=dict)
    expect_not: dict[str | int, list[str]] = Field(default_factory=dict)


class BadgeTestFile(_Strict):
    """A whole test file."""

    schema_file: str | None = Field(None, alias="schema")
    badges: str | None = None
    users: dict[str, str | int] = Field(default_factory=dict)
    steps: list[BadgeTestStep]


@dataclass(frozen=True)
class StepResult:
    name: str
    failures: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class FileResult:
    path: str
    steps: tuple[StepResult, ...] = ()
    #: why the file could not run at all (unreadable, a bad schema, badge.json refused)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and all(step.passed for step in self.steps)


@dataclass(frozen=True)
class Report:
    files: tuple[FileResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.files)

    @property
    def counts(self) -> tuple[int, int]:
        """(steps passed, steps failed or files that could not run)."""
        steps = [step for result in self.files for step in result.steps]
        failed = sum(not step.passed for step in steps) + sum(result.error is not None for result in self.files)
        return len(steps) - sum(not step.passed for step in steps), failed


def parse_test_file(text: str, source: str) -> BadgeTestFile:
    """A test file from its YAML or JSON *text* (JSON is YAML); one ConfigError listing every problem."""
    import yaml

    try:
        data = json.loads(text, object_pairs_hook=_unique_keys) if source.endswith(".json") else yaml.load(
            text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader that also refuses duplicate keys
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: not valid {'JSON' if source.endswith('.json') else 'YAML'}: "
                          f"{' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a test file is a mapping with 'steps' (and 'schema', 'badges', 'users')")
    try:
        return BadgeTestFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg'].lower()}"
                             for error in exc.errors(include_url=False))
        raise ConfigError(f"{source}: {problems}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key written twice (the second would silently replace the first)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} is written twice in one object")
        seen[key] = value
    return seen


def _unique_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    twice = sorted({str(key) for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"the key {twice[0]!r} is written twice in one mapping (line {node.start_mark.line + 1})")
    return dict(loader.construct_pairs(node, deep=deep))


def _yaml_loader() -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """YAML's safe loader, refusing a key written twice in one mapping."""

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
    return UniqueKeyLoader


def find_test_files(paths: list[Path]) -> list[Path]:
    """The test files *paths* name: files as given, folders searched (not recursively) for the suffixes."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.name.endswith(TEST_FILE_SUFFIXES))
        else:
            found.append(path)
    return found


def step_name(step: BadgeTestStep, index: int) -> str:
    return step.name or f"step {index + 1}"


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split(".", 1))


def _value(value: Any) -> sql.Literal:
    """A value of the file as a SQL literal (a mapping as jsonb): no parameters, so a "%" in a name is a "%"."""
    return sql.Literal(Jsonb(value) if isinstance(value, dict) else value)


def _where(where: Mapping[str, Any]) -> sql.Composable:
    if not where:
        return sql.SQL("")
    # IS NOT DISTINCT FROM: "where: {last_login: null}" finds the rows whose last_login is NULL
    parts = [sql.SQL("{} IS NOT DISTINCT FROM {}").format(sql.Identifier(column), _value(value))
             for column, value in where.items()]
    return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(parts))


def step_statements(step: BadgeTestStep) -> list[sql.Composed | str]:
    """The step's writes, composed: identifiers for names, literals for values; ``sql`` last, as written."""
    statements: list[sql.Composed | str] = []
    for table, rows in step.insert.items():
        for row in rows:
            statements.append(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                _table(table), sql.SQL(", ").join(map(sql.Identifier, row)),
                sql.SQL(", ").join(map(_value, row.values()))) if row else
                sql.SQL("INSERT INTO {} DEFAULT VALUES").format(_table(table)))
    for table, update in step.update.items():
        assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(column), _value(value))
                                         for column, value in update.set.items())
        statements.append(sql.SQL("UPDATE {} SET {}{}").format(_table(table), assignments, _where(update.where)))
    for table, delete in step.delete.items():
        statements.append(sql.SQL("DELETE FROM {}{}").format(_table(table), _where(delete.where)))
    if step.sql:
        statements.append(step.sql)
    return statements


def unknown_codes(spec: BadgeTestFile, codes: set[str]) -> list[str]:
    """Codes the file's expectations name that badge.json does not have (a typo would pass an expect_not)."""
    named = {code for step in spec.steps for wanted in (step.expect, step.expect_not)
             for listed in wanted.values() for code in listed}
    return sorted(named - codes)


def judge(step: BadgeTestStep, held: Mapping[str, set[str]], users: Mapping[str, str | int]) -> tuple[str, ...]:
    """What *step* expected that *held* (user id as stored → badge codes) contradicts, one sentence each."""
    failures = []
    for who, codes in step.expect.items():
        user = str(users.get(str(who), who))
        missing = [code for code in codes if code not in held.get(user, set())]
        if missing:
            failures.append(f"{who} should hold {', '.join(missing)} but holds "
                            f"{', '.join(sorted(held.get(user, set()))) or 'nothing'}")
    for who, codes in step.expect_not.items():
        user = str(users.get(str(who), who))
        wrong = [code for code in codes if code in held.get(user, set())]
        if wrong:
            failures.append(f"{who} should not hold {', '.join(wrong)}")
    return tuple(failures)
