"""The command line as users run it: exit codes, one-sentence errors, no tracebacks, no passwords."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SEED, SEED_BADGES


def badged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BADGED_", "PG")) and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "badged", *args, "--log-level", "warning"], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})}, check=False)


def test_validate_accepts_the_seed_and_needs_no_database() -> None:
    result = badged("validate", "--badges", str(SEED / "badge.json"), env={"BADGED_DSN": "host=/nonexistent"})
    assert result.returncode == 0
    assert result.stdout.strip().endswith("3 badges valid (pionner, collector, star)")


def test_invalid_input_is_one_sentence_on_stderr_with_exit_1_and_no_traceback(write_badges: Any) -> None:
    path = write_badges([{**SEED_BADGES[1], "trigger_condition": "upsert"}])
    result = badged("validate", "--badges", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"badged: error: {path}: badge #0 ('collector'), field 'trigger_condition': must be one of insert, update, "
        "delete (got 'upsert')"]


def test_a_missing_file_and_a_usage_error_exit_1(tmp_path: Path) -> None:
    missing = badged("validate", "--badges", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "nope.json" in missing.stderr
    usage = badged("plan", "--output", "yaml")
    assert usage.returncode == 1, "2 means 'changes pending' for plan --detailed-exitcode"
    assert usage.stderr == "badged: error: --output 'yaml' is not an output format: write text or json\n"


def test_plan_reconcile_plan_with_detailed_exit_codes_and_env_vars(dsn: str, write_badges: Any) -> None:
    env = {"BADGED_BADGES": str(write_badges(SEED_BADGES)), "DATABASE_URL": dsn}
    pending = badged("plan", "--detailed-exitcode", env=env)
    assert pending.returncode == 2
    assert pending.stdout.startswith("Plan: 15 to create, 0 to replace, 0 to drop.")
    applied = badged("reconcile", "--once", env=env)
    assert applied.returncode == 0 and "Applied: 15 to create" in applied.stdout
    in_sync = badged("plan", "--detailed-exitcode", "--output", "json", env=env)
    assert in_sync.returncode == 0
    assert json.loads(in_sync.stdout)["in_sync"] is True
    assert badged("reconcile", "--once", env=env).stdout.strip() == \
        "No changes. The database matches badge.json (3 badges)."


def test_a_password_never_appears_in_any_output(write_badges: Any) -> None:
    path = write_badges(SEED_BADGES)
    for dsn in ("postgresql://app:s3cret-Pa55@127.0.0.1:1/app?connect_timeout=2",
                "host=127.0.0.1 port=1 user=app password=s3cret-Pa55 connect_timeout=2"):
        result = badged("plan", "--badges", str(path), "--dsn", dsn)
        assert result.returncode == 1
        assert "s3cret-Pa55" not in result.stdout + result.stderr
        assert result.stderr.startswith("badged: error: ") and "Traceback" not in result.stderr


def test_a_table_missing_from_the_database_applies_nothing(dsn: str, write_badges: Any) -> None:
    path = write_badges([*SEED_BADGES, {**SEED_BADGES[1], "code": "ghost", "trigger_table": "no_such_table"}])
    result = badged("reconcile", "--once", "--badges", str(path), "--dsn", dsn)
    assert result.returncode == 1
    assert "badge #3 ('ghost'), field 'trigger_table': table no_such_table does not exist" in result.stderr
    assert badged("plan", "--detailed-exitcode", "--badges", str(write_badges(SEED_BADGES)), "--dsn", dsn
                  ).returncode == 2, "nothing was applied, not even the valid badges"


def test_a_missing_badge_file_names_its_absolute_path_and_how_to_name_another(cli: Any, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("validate", "--badges", "nope.json")
    assert code != 0
    assert f"{tmp_path / 'nope.json'}: file not found; name badge.json with --badges or BADGED_BADGES" in err


def test_no_dsn_anywhere_says_which_settings_were_looked_at(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BADGED_DSN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGHOST", "/nonexistent-badged-socket-dir")
    code, _, err = cli("plan", "--badges", str(SEED / "badge.json"))
    assert code != 0
    assert "cannot connect to the database: no --dsn, BADGED_DSN or DATABASE_URL was given, and libpq's defaults " \
           "failed: " in err
