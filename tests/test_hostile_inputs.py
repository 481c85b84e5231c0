"""Hostile and unlucky badge.json files: one clear sentence each, naming badge and field; nothing is applied.

Most cases need no database: ``badged validate`` runs in this process on a file written
here, and must exit 1 with exactly one ``badged: error:`` line per problem, no traceback,
and a line short enough to read even when the input is a megabyte. The cases that only
the database can tell (badged's own tables, system catalogs, names PostgreSQL would cut
short) go through ``badged reconcile --once`` and ``badged plan`` and must leave the
catalog exactly as it was; the daemon meets the deepest conditions and lives on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from badged.condition import MAX_DEPTH, MAX_LENGTH, ConditionError, Event, parse_condition
from badged.errors import ConfigError, Problem, SpecError
from badged.settings import Settings
from badged.spec import load_badges
from tests.conftest import SEED_BADGES
from tests.daemon_process import DaemonProcess
from tests.helpers import SEED_OBJECTS, object_oids, triggers

BASE: dict[str, Any] = {"name": "Collector", "code": "collector", "condition": "true", "trigger_condition": "insert",
                        "trigger_table": "dummy_sketch", "user_field": "user_id"}
FILE = None  # a problem of the whole file: it names no badge
#: the longest error line we accept: a sentence, not an echo of a megabyte of input
LONGEST_LINE = 700

Content = str | bytes | list[Any]
Where = tuple[int, str | None, str | None] | None


def one(**changes: Any) -> list[dict[str, Any]]:
    """The collector badge with *changes*; a change to ``...`` (Ellipsis) removes the field."""
    return [{k: v for k, v in {**BASE, **changes}.items() if v is not ...}]


def at(field: str | None, index: int = 0, code: str | None = "collector") -> Where:
    """Where a problem is: badge #index (named by *code*), *field*; most are in badge #0, 'collector'."""
    return (index, code, field)


def nested(template: str, depth: int, middle: str, close: str) -> str:
    return template * depth + middle + close * depth


def case(id: str, content: Content, where: Where, fragment: str) -> Any:
    return pytest.param(content, where, fragment, id=id)


def dbcase(checked_by: str, id: str, content: Content, where: Where, fragment: str) -> Any:
    return pytest.param(checked_by, content, where, fragment, id=id)


def keys(*pairs: tuple[str, Any], after: list[dict[str, Any]] | None = None) -> str:
    """badge.json whose last badge is written with exactly these (possibly repeated) keys, after the badges *after*."""
    written = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"
    return "[" + "".join(f"{json.dumps(item)}, " for item in after or ()) + written + "]"


BASE_PAIRS = tuple(BASE.items())

PURE_CASES = [
    # ---- the file as a whole
    case("utf8-bom", "\ufeff" + json.dumps(one()), FILE, "byte order mark (U+FEFF); save it as UTF-8 without BOM"),
    case("invalid-utf8", b'[{"name": "Coll\xff\xfeector"}]', FILE,
         "is not UTF-8: byte 0xff on line 1 (offset 15) cannot be decoded"),
    case("empty-file", "", FILE, "invalid JSON at line 1, column 1: Expecting value"),
    case("trailing-garbage", json.dumps(one()) + " ]", FILE, "invalid JSON at line 1, column"),
    case("truncated", json.dumps(one())[:-5], FILE, "invalid JSON at line 1, column"),
    case("top-level-object", json.dumps(BASE), FILE, "must be a JSON list of badges, not a JSON object"),
    case("top-level-string", '"badges"', FILE, "must be a JSON list of badges, not a JSON string"),
    case("top-level-number", "42", FILE, "must be a JSON list of badges, not a JSON number"),
    case("top-level-null", "null", FILE, "must be a JSON list of badges, not a JSON null"),
    case("empty-list", "[]", FILE, "the list of badges is empty; refusing to drop every badge"),
    case("json-nested-100000-deep", "[" * 100_000 + "]" * 100_000, FILE, "invalid JSON: it nests too deeply"),
    case("number-with-5000-digits", "[" + "9" * 5000 + "]", FILE, "invalid JSON: a number has more than 4,300 digits"),
    # ---- a list item that is not an object
    case("item-is-a-list", "[[]]", at(None, code=None), "must be a JSON object, not a JSON list"),
    case("item-is-a-string", '["collector"]', at(None, code=None), "must be a JSON object, not a JSON string"),
    case("item-is-null", "[null]", at(None, code=None), "must be a JSON object, not a JSON null"),
    case("item-is-nan", "[NaN]", at(None, code=None), "must be a JSON object, not a JSON number"),
    # ---- keys: duplicated, unknown, missing
    case("duplicate-code-key", keys(*BASE_PAIRS, ("code", "gold")), at("code", code="gold"),
           "is written 2 times in this badge; JSON keeps only the last value"),
    case("duplicate-condition-key", keys(("condition", "false"), *BASE_PAIRS), at("condition"),
           "is written 2 times in this badge"),
    case("misspelt-key", [{**BASE, "user_feild": "user_id"}], at("user_feild"),
           "unknown field; did you mean 'user_field'?"),
    case("unknown-key", [{**BASE, "points": 10}], at("points"), "unknown field; known fields: name, code"),
    case("empty-key", [{**BASE, "": 1}], at(None), "a field with an empty name; known fields"),
    case("megabyte-key", [{**BASE, "k" * 1_000_000: 1}], at("k" * 30 + "…" + "k" * 30), "unknown field"),
    case("missing-field", one(user_field=...), at("user_field"), "is required"),
    # ---- every field given a JSON type other than a string
    case("name-number", one(name=123), at("name"), "must be a string, not a JSON number"),
    case("name-null", one(name=None), at("name"), "must be a string, not a JSON null"),
    case("code-list", one(code=["collector"]), at("code", code=None), "must be a string, not a JSON list"),
    case("code-object", one(code={"a": 1}), at("code", code=None), "must be a string, not a JSON object"),
    case("condition-boolean", one(condition=True), at("condition"), "must be a string, not a JSON boolean"),
    case("trigger-table-float", one(trigger_table=1.5), at("trigger_table"), "must be a string, not a JSON number"),
    case("user-field-object", one(user_field={"column": "user_id"}), at("user_field"),
           "must be a string, not a JSON object"),
    case("trigger-condition-number", one(trigger_condition=1), at("trigger_condition"),
           "must be one of insert, update, delete (got 1)"),
    case("trigger-condition-list", one(trigger_condition=["insert"]), at("trigger_condition"),
           "must be one of insert, update, delete (got ['insert'])"),
    case("trigger-condition-null", one(trigger_condition=None), at("trigger_condition"),
           "must be one of insert, update, delete (got None)"),
    # ---- empty and blank
    case("name-empty", one(name=""), at("name"), "must not be empty"),
    case("code-blank", one(code="   "), at("code", code="   "), "must not be empty"),
    case("condition-blank", one(condition=" \n\t "), at("condition"), "must not be empty"),
    case("trigger-table-empty", one(trigger_table=""), at("trigger_table"), "must not be empty"),
    case("user-field-blank", one(user_field="  "), at("user_field"), "must not be empty"),
    case("trigger-condition-empty", one(trigger_condition=""), at("trigger_condition"),
           "must be one of insert, update, delete (got '')"),
    # ---- values of trigger_condition that are not insert, update or delete
    case("trigger-condition-truncate", one(trigger_condition="truncate"), at("trigger_condition"), "(got 'truncate')"),
    case("trigger-condition-two", one(trigger_condition="insert,update"), at("trigger_condition"),
           "(got 'insert,update')"),
    case("trigger-condition-nul", one(trigger_condition="insert\x00"), at("trigger_condition"),
           "(got 'insert\\x00')"),
    # ---- NUL, control and invisible characters
    case("nul-in-name", one(name="Coll\x00ector"), at("name"), "control character U+0000"),
    case("newline-in-name", one(name="Coll\nector"), at("name"), "control character U+000A"),
    case("nul-in-condition", one(condition="true\x00; drop table auth_user"), at("condition"),
           "insert badge condition contains a NUL character"),
    case("nul-in-trigger-table", one(trigger_table="dummy_sketch\x00; drop table auth_user"), at("trigger_table"),
           "control character U+0000; a table name has none"),
    case("nul-in-user-field", one(user_field="user_id\x00x"), at("user_field"),
           "control character U+0000; a column name has none"),
    case("nul-in-code", one(code="coll\x00ector"), at("code", code="coll\x00ector"),
           "may contain only letters, digits, '_' and '-'"),
    case("zero-width-space-in-trigger-table", one(trigger_table="dummy_sketch\u200b"), at("trigger_table"),
           "U+200B ZERO WIDTH SPACE"),
    case("right-to-left-override-in-user-field", one(user_field="user\u202e_id"), at("user_field"),
           "U+202E RIGHT-TO-LEFT OVERRIDE"),
    case("no-break-space-in-trigger-table", one(trigger_table="dummy\u00a0sketch"), at("trigger_table"),
           "U+00A0 NO-BREAK SPACE"),
    case("zero-width-space-in-condition-name", one(condition="hit_views\u200b > 1"), at("condition"),
           "U+200B ZERO WIDTH SPACE in the name"),
    case("lone-surrogate-in-name", one(name="Coll\ud800ector"), at("name"), "half of a UTF-16 surrogate pair"),
    case("lone-surrogate-in-condition", one(condition="name = '\udfff'"), at("condition"),
           "half of a UTF-16 surrogate pair"),
    # ---- look-alike letters
    case("cyrillic-e-in-trigger-table", one(trigger_table="dummy_sk\u0435tch"), at("trigger_table"),
           "mixes Latin and Cyrillic letters"),
    case("greek-omicron-in-user-field", one(user_field="user_id_\u03bfld"), at("user_field"),
           "mixes Latin and Greek letters"),
    case("cyrillic-a-in-condition-table", one(condition="count(*) > 1 from dummy_sketch_\u0430rchive"),
           at("condition"), "mixes Latin and Cyrillic letters"),
    # ---- sizes
    case("condition-one-megabyte", one(condition="true AND " * 116_508 + "true"), at("condition"),
         f"characters long; a condition may have at most {MAX_LENGTH:,}"),
    case("name-201-characters", one(name="N" * 201), at("name"), "is 201 characters long; at most 200"),
    case("code-too-long-once-prefixed", one(code="c" * 57), at("code", code="c" * 57),
           "names hold at most 63 bytes, so shorten the code to 56 bytes or fewer"),
    case("code-one-megabyte", one(code="c" * 1_000_000), at("code", code="c" * 30 + "…" + "c" * 30),
           "is 1,000,000 characters long; at most 63 are allowed"),
    case("trigger-table-one-megabyte", one(trigger_table="t" * 1_000_000), at("trigger_table"),
           "is 1,000,000 characters long; at most 300"),
    case("trigger-table-identifier-64-bytes", one(trigger_table="t" * 64), at("trigger_table"),
           "64 bytes long; PostgreSQL silently cuts names to 63 bytes"),
    case("schema-identifier-70-bytes", one(trigger_table="s" * 70 + ".dummy_sketch"), at("trigger_table"),
           "70 bytes long; PostgreSQL silently cuts names to 63 bytes"),
    case("quoted-identifier-64-bytes-of-utf8", one(user_field='"' + "\u00e9" * 32 + '"'), at("user_field"),
           "64 bytes long; PostgreSQL silently cuts names to 63 bytes"),
    # ---- trigger_table that is not one table
    case("trigger-table-with-alias", one(trigger_table="dummy_sketch s"), at("trigger_table"),
           "must be a table name such as auth_user"),
    case("trigger-table-only", one(trigger_table="ONLY dummy_sketch"), at("trigger_table"), "must be a table name"),
    case("trigger-table-three-parts", one(trigger_table="db.public.dummy_sketch"), at("trigger_table"),
           "must be a table name"),
    case("trigger-table-two-tables", one(trigger_table="dummy_sketch, auth_user"), at("trigger_table"),
           "must be a table name"),
    case("trigger-table-subquery", one(trigger_table="(select 1) x"), at("trigger_table"), "must be a table name"),
    case("trigger-table-second-statement", one(trigger_table="dummy_sketch; drop table auth_user"),
           at("trigger_table"), "must be a table name"),
    case("trigger-table-system-catalog", one(trigger_table="pg_catalog.pg_class"), at("trigger_table"),
           "is in the system schema 'pg_catalog'"),
    case("trigger-table-information-schema", one(trigger_table="information_schema.tables"), at("trigger_table"),
           "is in the system schema 'information_schema'"),
    # ---- user_field that is not one column
    case("user-field-expression", one(user_field="user_id + 1"), at("user_field"), "must be one column name"),
    case("user-field-qualified", one(user_field="NEW.user_id"), at("user_field"), "must be one column name"),
    case("user-field-star", one(user_field="*"), at("user_field"), "must be one column name"),
    case("user-field-number", one(user_field="1"), at("user_field"), "must be one column name"),
    case("user-field-two-columns", one(user_field="user_id, id"), at("user_field"), "must be one column name"),
    # ---- conditions that are not one safe expression
    case("two-statements", one(condition="true; drop table auth_user"), at("condition"), "not several statements"),
    case("comment-hiding-a-statement", one(condition="true /* harmless */; delete from auth_user"), at("condition"),
           "not several statements"),
    case("data-modifying-cte", one(condition="exists (with d as (delete from auth_user returning 1) select 1 from d)"),
           at("condition"), "must not contain INSERT, UPDATE, DELETE or MERGE"),
    case("update-in-cte", one(condition="exists (with u as (update auth_user set username = 'x' returning 1) "
                                        "select 1 from u)"), at("condition"), "must not contain INSERT, UPDATE"),
    case("for-update", one(condition="count(*) > 0 from dummy_sketch for update"), at("condition"),
           "must not lock rows"),
    case("select-into", one(condition="true into stolen from auth_user"), at("condition"), "must not use INTO"),
    case("copy", one(condition="copy auth_user to '/tmp/users'"), at("condition"), "is not valid SQL"),
    case("do-block", one(condition="do $$ begin perform 1; end $$"), at("condition"), "is not valid SQL"),
    case("union", one(condition="true union select false"), at("condition"), "UNION, INTERSECT and EXCEPT"),
    case("two-values", one(condition="true, false"), at("condition"), "must compute exactly one value"),
    case("star", one(condition="* from dummy_sketch"), at("condition"), "not '*'"),
    case("named-result", one(condition="true as ok"), at("condition"), "must not name its result with AS"),
    case("unbalanced-quote", one(condition="username = 'bob"), at("condition"), "unterminated quoted string"),
    case("unbalanced-dollar-quote", one(condition="username = $q$bob"), at("condition"),
           "unterminated dollar-quoted string"),
    case("unterminated-comment", one(condition="true /* and false"), at("condition"), "unterminated /* comment"),
    case("old-in-insert", one(condition="OLD.hit_views > 1"), at("condition"), "reads OLD, which is NULL on insert"),
    case("new-in-delete", one(condition="NEW.hit_views > 1", trigger_condition="delete"), at("condition"),
           "reads NEW, which is NULL on delete; use OLD instead"),
    case("other-table-without-from", one(condition="auth_user.id > 1"), at("condition"), "but has no FROM"),
    case("line-break-in-the-quoted-token", one(condition="1 'a\nb'"), at("condition"),
           "syntax error at or near \"'a\\nb'\""),
    case("unterminated-9000-character-string", one(condition="true and '" + "x" * 9000), at("condition"),
           "unterminated quoted string"),
    # ---- conditions nesting deeper than any parser or walker should recurse
    case("250-nested-calls", one(condition=nested("abs(", 250, "1", ")") + " > 0"), at("condition"),
         f"nests too deeply (more than {MAX_DEPTH} levels"),
    case("1000-nested-not", one(condition="NOT " * 1000 + "true"), at("condition"), "nests too deeply"),
    case("4990-long-plus-chain", one(condition="1+" * 4990 + "1>0"), at("condition"), "nests too deeply"),
    case("100-nested-subqueries", one(condition=nested("exists(select ", 100, "1", ")")), at("condition"),
           "nests too deeply"),
    case("1000-nested-arrays", one(condition=nested("ARRAY[", 1000, "1", "]") + " IS NOT NULL"), at("condition"),
           "nests too deeply"),
    case("200-nested-case", one(condition=nested("case when true then ", 200, "true", " end")), at("condition"),
           "nests too deeply"),
]


def write(path: Path, content: Content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("badged: error: ")]


def assert_one_sentence(err: str, source: Path | str, where: Where, fragment: str) -> None:
    """*err* is exactly one error line, about *where* (badge and field), containing *fragment*."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    (line,) = lines
    prefix = f"badged: error: {source}: "
    if where is not None:
        index, code, field = where
        prefix += str(Problem("", index, code, field))
    assert line.startswith(prefix), line
    assert fragment in line, line
    assert len(line) <= LONGEST_LINE, f"{len(line)} characters: {line[:200]}…"


def test_there_are_at_least_sixty_distinct_bad_inputs() -> None:
    assert len({p.id for p in PURE_CASES}) == len(PURE_CASES) >= 60


@pytest.mark.parametrize("content, where, fragment", PURE_CASES)
def test_validate_refuses_with_one_sentence_naming_the_badge_and_the_field(
        cli: Any, tmp_path: Path, content: Content, where: Where, fragment: str) -> None:
    path = write(tmp_path / "badge.json", content)
    code, out, err = cli("validate", "--badges", str(path))
    assert code == 1
    assert out == ""
    assert_one_sentence(err, path, where, fragment)


def test_every_problem_of_a_file_is_one_line_each(cli: Any, tmp_path: Path) -> None:
    items = [
        {**BASE, "name": "a\x00b"},
        {**BASE, "code": "deep", "condition": "NOT " * 1000 + "true"},
        {**BASE, "code": "nul", "trigger_table": "dummy_sketch\x00"},
        {**BASE, "code": "dup"},
        {**BASE, "code": "dup"},
    ]
    path = write(tmp_path / "badge.json", items)
    code, _out, err = cli("validate", "--badges", str(path))
    assert code == 1 and "Traceback" not in err
    assert [line.removeprefix(f"badged: error: {path}: ").split(": ")[0] for line in err.splitlines()] == [
        "badge #0 ('collector'), field 'name'", "badge #1 ('deep'), field 'condition'",
        "badge #2 ('nul'), field 'trigger_table'", "badge #4 ('dup'), field 'code'"]


def test_a_table_in_badgeds_own_schema_is_refused_when_the_schema_is_written(tmp_path: Path) -> None:
    path = write(tmp_path / "badge.json", [*one(trigger_table="badged.award"),
                                           {**BASE, "code": "mine", "trigger_table": "Mine.badge"}])
    with pytest.raises(SpecError) as raised:
        load_badges(path, prefix="badged_", schema="badged")
    assert [line.removeprefix(f"{path}: ") for line in raised.value.lines()] == [
        "badge #0 ('collector'), field 'trigger_table': badged.award is in badged's own schema 'badged'; a badge "
        "watches one of the application's tables (badged writes its own tables from its triggers)"]
    with pytest.raises(SpecError) as custom:
        load_badges(path, prefix="badged_", schema="mine")
    assert [problem.code for problem in custom.value.problems] == ["mine"]


@pytest.mark.parametrize("setting, value", [
    ("prefix", "badged_\n"), ("schema", "badged\n"), ("channel", "badge_earned\n"),  # "$" matched before "\n"
    ("prefix", "badged\x00_"), ("schema", "Badged"), ("channel", "x" * 64),
])
def test_settings_ending_in_a_newline_or_otherwise_odd_are_one_line_config_errors(setting: str, value: str) -> None:
    odd: dict[str, Any] = {setting: value}
    with pytest.raises(ConfigError) as raised:
        Settings(**odd)
    message = str(raised.value)
    assert message.startswith(f"{setting} {value!r} must be") and "\n" not in message


def depth_of(build: Callable[[int], str]) -> int:
    """The largest n for which parse_condition accepts build(n) (binary search)."""
    low, high = 1, 2 * MAX_DEPTH
    while low < high:
        middle = (low + high + 1) // 2
        try:
            parse_condition(build(middle), Event.UPDATE)
        except ConditionError:
            high = middle - 1
        else:
            low = middle
    return low


def plus_chain(n: int) -> str:
    return " + ".join(["hit_views"] * n) + " > 0"


def test_the_depth_limit_is_a_clear_error_just_past_it_and_nothing_just_below() -> None:
    deepest = depth_of(plus_chain)
    assert MAX_DEPTH - 10 < deepest < MAX_DEPTH
    with pytest.raises(ConditionError, match=r"^nests too deeply \(more than 100 levels"):
        parse_condition(plus_chain(deepest + 1), Event.UPDATE)


# ------------------------------------------------------------------------------------------------ the database


def snapshot(dsn: str) -> dict[str, Any]:
    """What a reconcile could change: badged's triggers and functions (by OID), schemas, badge rows."""
    with psycopg.connect(dsn) as conn:
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
        rows = conn.execute("SELECT * FROM badged.badge ORDER BY code").fetchall() if "badged" in schemas else []
        every_trigger = conn.execute("SELECT tgrelid::regclass::text, tgname FROM pg_trigger ORDER BY 1, 2").fetchall()
        return {"objects": object_oids(conn), "schemas": schemas, "badges": rows, "triggers": every_trigger}


@pytest.fixture
def applied(cli: Any, dsn: str, tmp_path: Path) -> dict[str, Any]:
    """The seed's badges reconciled; the catalog as it then is."""
    code, _out, err = cli("reconcile", "--once", "--badges", str(write(tmp_path / "seed.json", SEED_BADGES)),
                          "--dsn", dsn, "--log-level", "error")
    assert code == 0, err
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.{'t' * 63} (id int, user_id int)")
        conn.execute(f"ALTER TABLE dummy_sketch ADD COLUMN {'u' * 63} int")
    return snapshot(dsn)


HOSTILE = {**SEED_BADGES[1], "code": "hostile"}
DATABASE = "database"  # the source DatabaseMismatch names: what only the database could tell
SPEC = "spec"  # refused when badge.json is read, before any SQL
DATABASE_CASES = [
    dbcase(SPEC, "nul-in-trigger-table", [{**HOSTILE, "trigger_table": "dummy_sketch\x00; drop table auth_user"}],
           at("trigger_table", 3, "hostile"), "control character U+0000"),
    dbcase(SPEC, "nul-in-user-field", [{**HOSTILE, "user_field": "user_id\x00"}], at("user_field", 3, "hostile"),
           "control character U+0000"),
    dbcase(SPEC, "nul-in-name", [{**HOSTILE, "name": "Hostile\x00"}], at("name", 3, "hostile"),
           "control character U+0000"),
    dbcase(SPEC, "nul-in-condition", [{**HOSTILE, "condition": "true\x00"}], at("condition", 3, "hostile"),
           "NUL character"),
    dbcase(SPEC, "trigger-table-64-bytes-cut-to-an-existing-table", [{**HOSTILE, "trigger_table": "t" * 64}],
           at("trigger_table", 3, "hostile"), "PostgreSQL silently cuts names to 63 bytes"),
    dbcase(SPEC, "user-field-64-bytes-cut-to-an-existing-column", [{**HOSTILE, "user_field": "u" * 64}],
           at("user_field", 3, "hostile"), "PostgreSQL silently cuts names to 63 bytes"),
    dbcase(SPEC, "badgeds-award-table", [{**HOSTILE, "trigger_table": "badged.award", "condition": "true"}],
           at("trigger_table", 3, "hostile"), "badged.award is in badged's own schema 'badged'"),
    dbcase(SPEC, "badgeds-badge-table-quoted",
           [{**HOSTILE, "trigger_table": '"badged"."badge"', "user_field": "code", "condition": "true"}],
           at("trigger_table", 3, "hostile"), "badged.badge is in badged's own schema 'badged'"),
    dbcase(DATABASE, "system-catalog-through-the-search-path",
           [{**HOSTILE, "trigger_table": "pg_class", "user_field": "oid", "condition": "true"}],
           at("trigger_table", 3, "hostile"), "pg_catalog.pg_class is in a system schema 'pg_catalog'"),
    dbcase(SPEC, "250-nested-calls", [{**HOSTILE, "condition": nested("abs(", 250, "1", ")") + " > 0"}],
           at("condition", 3, "hostile"), "nests too deeply"),
    dbcase(SPEC, "1000-nested-not", [{**HOSTILE, "condition": "NOT " * 1000 + "true"}], at("condition", 3, "hostile"),
           "nests too deeply"),
    dbcase(SPEC, "4990-long-plus-chain", [{**HOSTILE, "condition": "1+" * 4990 + "1>0"}], at("condition", 3, "hostile"),
           "nests too deeply"),
    dbcase(SPEC, "condition-one-megabyte", [{**HOSTILE, "condition": "true AND " * 116_508 + "true"}],
           at("condition", 3, "hostile"), "characters long"),
    dbcase(SPEC, "duplicate-key", keys(*HOSTILE.items(), ("trigger_table", "auth_user"), after=SEED_BADGES),
           at("trigger_table", 3, "hostile"), "is written 2 times"),
]


@pytest.mark.parametrize("command", ["reconcile", "plan"])
@pytest.mark.parametrize("checked_by, content, where, fragment", DATABASE_CASES)
def test_reconcile_and_plan_refuse_and_leave_the_catalog_as_it_was(
        cli: Any, dsn: str, applied: dict[str, Any], tmp_path: Path, command: str,
        checked_by: str, content: Content, where: Where, fragment: str) -> None:
    items = content if isinstance(content, (str, bytes)) else [*SEED_BADGES, *content]
    path = write(tmp_path / "badge.json", items)
    args = ["--once"] if command == "reconcile" else []
    code, out, err = cli(command, *args, "--badges", str(path), "--dsn", dsn, "--log-level", "error")
    assert code == 1
    assert out == ""
    assert_one_sentence(err, path if checked_by == SPEC else DATABASE, where, fragment)
    assert snapshot(dsn) == applied


def test_a_table_of_badgeds_schema_reached_through_the_search_path_is_refused(
        cli: Any, dsn: str, applied: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path / "badge.json", [*SEED_BADGES, {**HOSTILE, "trigger_table": "award", "condition": "true"}])
    on_path = conninfo.make_conninfo(dsn, options="-c search_path=public,badged")
    code, _out, err = cli("reconcile", "--once", "--badges", str(path), "--dsn", on_path, "--log-level", "error")
    assert code == 1
    assert_one_sentence(err, DATABASE, at("trigger_table", 3, "hostile"),
                        "badged.award is in badged's own schema 'badged'; a badge watches one of the application's "
                        "tables")
    assert snapshot(dsn) == applied


def test_a_table_of_a_custom_schema_is_refused(cli: Any, dsn: str, tmp_path: Path) -> None:
    seed = write(tmp_path / "seed.json", SEED_BADGES)
    custom = ["--schema", "awards", "--prefix", "aw_", "--dsn", dsn, "--log-level", "error"]
    assert cli("reconcile", "--once", "--badges", str(seed), *custom)[0] == 0
    before = snapshot(dsn)
    path = write(tmp_path / "badge.json", [*SEED_BADGES, {**HOSTILE, "trigger_table": "awards.award",
                                                          "condition": "true"}])
    code, _out, err = cli("reconcile", "--once", "--badges", str(path), *custom)
    assert code == 1
    assert "badge #3 ('hostile'), field 'trigger_table': awards.award is in badged's own schema 'awards'" in err
    assert snapshot(dsn) == before


def test_the_deepest_condition_accepted_is_reconciled_and_awarded(cli: Any, dsn: str, tmp_path: Path) -> None:
    """The limit leaves room: render, plan, apply and the trigger itself all handle the deepest condition."""
    deepest = depth_of(plus_chain)
    path = write(tmp_path / "badge.json", [{**SEED_BADGES[2], "condition": plus_chain(deepest)}])
    code, _out, err = cli("reconcile", "--once", "--badges", str(path), "--dsn", dsn, "--log-level", "error")
    assert code == 0, err
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO auth_user (username) VALUES ('bob')")
        conn.execute("INSERT INTO dummy_sketch (user_id, hit_views) VALUES (1, 0)")
        conn.execute("UPDATE dummy_sketch SET hit_views = 1")
        assert conn.execute("SELECT badge FROM badged.award").fetchall() == [("star",)]


@pytest.mark.slow
def test_the_daemon_meets_every_deep_condition_and_lives_on(dsn: str, tmp_path: Path,
                                                           daemons: list[DaemonProcess]) -> None:
    path = write(tmp_path / "badge.json", SEED_BADGES)
    daemon = DaemonProcess("--http", "127.0.0.1:0", "--badges", str(path), "--dsn", dsn)
    daemons.append(daemon)
    daemon.wait_applied()
    hostile = {
        "250 nested calls": nested("abs(", 250, "1", ")") + " > 0",
        "1,000 nested NOT": "NOT " * 1000 + "true",
        "a 4,990-long '+' chain (pglast alone crashes the process past ~20,000)": "1+" * 4990 + "1>0",
        "a NUL": "true\x00; drop table auth_user",
    }
    for what, condition in hostile.items():
        tmp = path.with_suffix(".tmp")
        write(tmp, [*SEED_BADGES, {**HOSTILE, "condition": condition}]).replace(path)
        invalid = daemon.wait_event("source.invalid", timeout=10)
        assert f"{path}: badge #3 ('hostile'), field 'condition': " in invalid["errors"][0], what
        assert daemon.process.poll() is None, what
        assert daemon.get("/healthz") == (200, "ok\n"), what
        assert daemon.get("/readyz")[0] == 503, what
    assert triggers(dsn) == set(SEED_OBJECTS.values()), "the last good state stays"
    write(path.with_suffix(".tmp"), SEED_BADGES[:1]).replace(path)
    daemon.wait_applied(timeout=10)
    assert triggers(dsn) == {SEED_OBJECTS["pionner"]}
    assert daemon.terminate() == 0
