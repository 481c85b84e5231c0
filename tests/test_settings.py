"""Every BADGED_* setting through one model: what is accepted, what is refused and how it is said.

The CLI reads ``badged.settings.Options`` from the environment with its flags on top; the Django app reads
the same model from ``settings.BADGED_*``. No database is needed: the commands run here fail, or are
``validate``, before connecting.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from badged import cli
from badged.errors import ConfigError
from badged.settings import ENV_PREFIX, Options, OptionsError, Settings, load_options, options_from
from tests.conftest import SEED

ROOT = Path(__file__).resolve().parent.parent
BADGES = str(SEED / "badge.json")
NAMES = sorted(field.alias for field in Options.model_fields.values() if field.alias)
DURATION = "is not a duration: write seconds (90 or 1.5), or 500ms, 90s, 5m, 1h"
POSITIVE = "must be more than 0 seconds: write seconds (90 or 1.5), or 500ms, 90s, 5m, 1h"
TOO_LONG = "is longer than 596h (2147483s), the longest duration badged takes (PostgreSQL's limit for timeouts)"
BOOLEAN = "is not a boolean: write true/false, 1/0, yes/no or on/off"
PREFIX = "is not a prefix: write 1-31 lower-case letters, digits or '_', starting with a letter or '_'"
IDENTIFIER = ("is not a lower-case identifier: write 1-63 lower-case letters, digits or '_', starting with a "
              "letter or '_'")
ADDRESS = "must look like :8080, 127.0.0.1:8080 or [::1]:8080, or be empty to disable"
DSN = ("BADGED_DSN is malformed: write a URL (postgresql://user@host/dbname) or key=value pairs (host=db dbname=app); "
       "it is not shown, as it may hold a password")
WEBHOOK = "BADGED_WEBHOOK is not an http:// or https:// URL; it is not shown, as it may hold a token"
SINK = ("BADGED_SINK is not a nats:// (or tls://) URL; it is not shown, as it may hold a password (webhooks: "
        "--webhook)")

#: (variable, bad value, the one sentence badged prints after "badged: error: ")
BAD = [
    ("BADGED_RESYNC", "abc", f"BADGED_RESYNC='abc' {DURATION}"),
    ("BADGED_RESYNC", "0", f"BADGED_RESYNC='0' {POSITIVE}"),
    ("BADGED_RESYNC", "-5", f"BADGED_RESYNC='-5' {POSITIVE}"),
    ("BADGED_RESYNC", "1h30m", f"BADGED_RESYNC='1h30m' {DURATION}"),
    ("BADGED_RESYNC", "5M", f"BADGED_RESYNC='5M' {DURATION}"),
    ("BADGED_RESYNC", "5 m", f"BADGED_RESYNC='5 m' {DURATION}"),
    ("BADGED_RESYNC", "nan", f"BADGED_RESYNC='nan' {DURATION}"),
    ("BADGED_RESYNC", "inf", f"BADGED_RESYNC='inf' {DURATION}"),
    ("BADGED_RESYNC", "1e3", f"BADGED_RESYNC='1e3' {DURATION}"),
    ("BADGED_LOCK_TIMEOUT", "abc", f"BADGED_LOCK_TIMEOUT='abc' {DURATION}"),
    ("BADGED_LOCK_TIMEOUT", "0.0001", "BADGED_LOCK_TIMEOUT='0.0001' is shorter than 1ms, the shortest duration "
                                      "badged takes"),
    ("BADGED_STATEMENT_TIMEOUT", "5 minutes", f"BADGED_STATEMENT_TIMEOUT='5 minutes' {DURATION}"),
    ("BADGED_STATEMENT_TIMEOUT", "9999999h", f"BADGED_STATEMENT_TIMEOUT='9999999h' {TOO_LONG}"),
    ("BADGED_RECHECK_INTERVAL", "0s", f"BADGED_RECHECK_INTERVAL='0s' {POSITIVE}"),
    ("BADGED_LOG_LEVEL", "verbose", "BADGED_LOG_LEVEL='verbose' is not a log level: write debug, info, warning or "
                                    "error"),
    ("BADGED_LOG_FORMAT", "yaml", "BADGED_LOG_FORMAT='yaml' is not a log format: write auto, json or console"),
    ("BADGED_OUTPUT", "yaml", "BADGED_OUTPUT='yaml' is not an output format: write text or json"),
    ("BADGED_ALLOW_EMPTY", "maybe", f"BADGED_ALLOW_EMPTY='maybe' {BOOLEAN}"),
    ("BADGED_ALLOW_EMPTY", "2", f"BADGED_ALLOW_EMPTY='2' {BOOLEAN}"),
    ("BADGED_ALLOW_EMPTY", "y", f"BADGED_ALLOW_EMPTY='y' {BOOLEAN}"),
    ("BADGED_PREFIX", "Badged_", f"BADGED_PREFIX='Badged_' {PREFIX}"),
    ("BADGED_PREFIX", "badged_\n", f"BADGED_PREFIX='badged_\\n' {PREFIX}"),
    ("BADGED_PREFIX", "1badged", f"BADGED_PREFIX='1badged' {PREFIX}"),
    ("BADGED_PREFIX", "p" * 32, f"BADGED_PREFIX='{'p' * 32}' {PREFIX}"),
    ("BADGED_SCHEMA", "my-schema", f"BADGED_SCHEMA='my-schema' {IDENTIFIER}"),
    ("BADGED_SCHEMA", "badged\n", f"BADGED_SCHEMA='badged\\n' {IDENTIFIER}"),
    ("BADGED_CHANNEL", "badge earned", f"BADGED_CHANNEL='badge earned' {IDENTIFIER}"),
    ("BADGED_HTTP", "eighty", f"BADGED_HTTP='eighty' {ADDRESS}"),
    ("BADGED_HTTP", ":99999", f"BADGED_HTTP=':99999' {ADDRESS}"),
    ("BADGED_CONFIGMAP", "badges", "BADGED_CONFIGMAP='badges' is not a ConfigMap reference: expected "
                                   "NAMESPACE/NAME[:KEY], e.g. default/badges or default/badges:badge.json"),
    ("BADGED_CONFIGMAP", "Prod/badges", "BADGED_CONFIGMAP='Prod/badges' is not a ConfigMap reference: namespace "
                                        "'Prod' is not a valid Kubernetes namespace (lowercase letters, digits and "
                                        "'-', at most 63); expected NAMESPACE/NAME[:KEY], e.g. default/badges or "
                                        "default/badges:badge.json"),
    ("BADGED_WEBHOOK", "ftp://hook:t0ken-XYZ@example.com/in", WEBHOOK),
    ("BADGED_DSN", "host=db password=s3cret-PW dbname", DSN),
    ("BADGED_DSN", "postgresql://app:s3cret-PW@db/app?sslmod=require", DSN),
    ("BADGED_GROUP", "  ", "BADGED_GROUP='  ' is blank: write a consumer group name"),
    ("BADGED_ALLOW_VOLATILE", "random; pg_sleep", "BADGED_ALLOW_VOLATILE='random; pg_sleep' names 'random; pg_sleep', "
                                                  "which is not a function name: write name or schema.name (lower "
                                                  "case), comma-separated"),
    ("BADGED_WEBHOOK_GROUP", " ", "BADGED_WEBHOOK_GROUP=' ' is blank: write a consumer group name"),
    ("BADGED_SINK", "https://app:s3cret-PW@broker/awards", SINK),
    ("BADGED_SINK_GROUP", " ", "BADGED_SINK_GROUP=' ' is blank: write a consumer group name"),
]
BAD_IDS = [f"{name}={value!r}" for name, value, _ in BAD]
#: the values no sentence may repeat
SECRETS = ("s3cret-PW", "t0ken-XYZ")
SECRET_NAMES = ("BADGED_DSN", "BADGED_WEBHOOK", "BADGED_SINK")


@pytest.fixture(autouse=True)
def no_badged_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tests set exactly the BADGED_* variables they are about; logging is reset after ``main`` ran."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX) and name != "BADGED_TEST_DSN":
            monkeypatch.delenv(name)
    yield


def badged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m badged ARGS`` as users run it, with only *env*'s BADGED_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BADGED_", "PG")) and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "badged", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, cwd=ROOT, check=False)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``badged ARGV`` in this process: (exit code, stdout, stderr); ``--help`` and usage errors included."""
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def resolved(*argv: str) -> argparse.Namespace:
    """The arguments ``main`` hands to a command: flags over the environment over defaults."""
    args = cli.build_parser().parse_args(list(argv))
    cli._use_options(args)
    return args


# --- bad values: one sentence each, exit 1, no traceback, --help still works ------------------------------


@pytest.mark.parametrize(("name", "value", "sentence"), BAD, ids=BAD_IDS)
def test_a_bad_variable_is_one_sentence_naming_it_and_exit_1(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                             sentence: str) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = run_main(capsys, "validate", "--badges", BADGES)
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"badged: error: {sentence}"]
    assert not any(secret in err for secret in SECRETS)


@pytest.mark.parametrize(("name", "value", "sentence"), BAD, ids=BAD_IDS)
@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["plan", "--help"], ["--version"]],
                         ids=" ".join)
def test_help_works_whatever_the_environment_holds(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch, argv: list[str], name: str,
                                                   value: str, sentence: str) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = run_main(capsys, *argv)
    assert code == 0
    assert out.startswith(("usage: badged", "badged 0.1.0")) and err == ""


@pytest.mark.parametrize(("name", "value"), [("BADGED_RESYNC", "abc"), ("BADGED_LOCK_TIMEOUT", "abc"),
                                             ("BADGED_LOG_LEVEL", "verbose"), ("BADGED_OUTPUT", "yaml"),
                                             ("BADGED_ALLOW_EMPTY", "maybe")])
def test_the_reported_values_fail_every_command_cleanly_and_leave_help_working(name: str, value: str) -> None:
    """The issue's cases, as a separate process: no traceback, exit 1; --help exits 0."""
    sentence = dict(((n, v), s) for n, v, s in BAD)[name, value]
    for argv in (["validate", "--badges", BADGES], ["plan", "--badges", BADGES], ["run"], ["listen"]):
        failed = badged(*argv, env={name: value})
        assert (failed.returncode, failed.stdout) == (1, ""), argv
        assert failed.stderr.splitlines() == [f"badged: error: {sentence}"], argv
    for argv in (["--help"], ["run", "--help"]):
        helped = badged(*argv, env={name: value})
        assert (helped.returncode, helped.stderr) == (0, ""), argv
        assert helped.stdout.startswith("usage: badged")


def test_every_bad_variable_is_reported_at_once_in_order(capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("BADGED_OUTPUT", "yaml"), ("BADGED_RESYNC", "abc"), ("BADGED_DSN", "password=s3cret-PW x")):
        monkeypatch.setenv(name, value)
    code, _, err = run_main(capsys, "validate", "--badges", BADGES)
    assert code == 1
    assert err.splitlines() == [f"badged: error: {DSN}", f"badged: error: BADGED_RESYNC='abc' {DURATION}",
                                "badged: error: BADGED_OUTPUT='yaml' is not an output format: write text or json"]


def test_every_variable_has_a_bad_value_here_unless_every_value_is_good() -> None:
    """A path is any non-empty string: the two path variables have no bad value to test.

    ``--allow-empty`` takes no value, so only ``BADGED_ALLOW_EMPTY`` can be a bad boolean.
    """
    assert {name for name, _, _ in BAD} == set(NAMES) - {"BADGED_BADGES", "BADGED_WEBHOOK_SECRET_FILE"}


# --- flags: the same parsing, and they win -----------------------------------------------------------------


FLAG_OF = {name: "--" + name.removeprefix(ENV_PREFIX).lower().replace("_", "-") for name in NAMES}


@pytest.mark.parametrize(("name", "value", "sentence"), [bad for bad in BAD if bad[0] != "BADGED_ALLOW_EMPTY"],
                         ids=[i for i, bad in zip(BAD_IDS, BAD, strict=True) if bad[0] != "BADGED_ALLOW_EMPTY"])
def test_a_bad_flag_is_refused_with_the_sentence_of_its_variable(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch, name: str,
                                                                 value: str, sentence: str) -> None:
    monkeypatch.setenv(name, "also bad, but the flag wins")
    command = "listen" if name == "BADGED_GROUP" else "run"
    code, out, err = run_main(capsys, command, FLAG_OF[name], value)
    assert (code, out) == (1, "")
    flag = FLAG_OF[name]
    said = sentence.replace(f"{name}=", f"{flag} ") if name not in SECRET_NAMES else sentence.replace(name, flag)
    assert err.splitlines() == [f"badged: error: {said}"]
    assert not any(secret in err for secret in SECRETS)


def test_flags_are_named_as_flags_and_variables_as_variables(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BADGED_LOCK_TIMEOUT", "abc")
    code, _, err = run_main(capsys, "run", "--resync", "0", "--http", "nonsense", "--dsn", "password=s3cret-PW x")
    assert code == 1 and "s3cret-PW" not in err
    assert err.splitlines() == [
        "badged: error: --dsn " + DSN.removeprefix("BADGED_DSN "),
        f"badged: error: BADGED_LOCK_TIMEOUT='abc' {DURATION}",
        f"badged: error: --resync '0' {POSITIVE}",
        f"badged: error: --http 'nonsense' {ADDRESS}",
    ]


def test_flags_win_over_the_environment_which_wins_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolved("run").resync == 60.0
    monkeypatch.setenv("BADGED_RESYNC", "10")
    assert resolved("run").resync == 10.0
    assert resolved("run", "--resync", "5m").resync == 300.0
    monkeypatch.setenv("BADGED_RESYNC", "abc")  # not read at all when the flag is given
    args = resolved("run", "--resync", "90s", "--lock-timeout", "500ms", "--allow-empty", "--output", "JSON")
    assert (args.resync, args.lock_timeout, args.allow_empty, args.output) == (90.0, 0.5, True, "json")
    assert cli._settings(args).lock_timeout_ms == 500


def test_commands_see_every_setting_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BADGED_SCHEMA", "awards_here")
    monkeypatch.setenv("BADGED_ALLOW_EMPTY", "YES")
    monkeypatch.setenv("BADGED_DSN", "postgresql://app@db/app")
    monkeypatch.setenv("BADGED_HTTP", "")
    monkeypatch.setenv("BADGED_CONFIGMAP", "prod/badges:badge.json")
    monkeypatch.setenv("BADGED_WEBHOOK_SECRET_FILE", "/run/secret")
    args = resolved("run", "--statement-timeout", "2m", "--http", "127.0.0.1:9000")
    assert (args.schema, args.allow_empty, args.dsn, args.http) == ("awards_here", True, "postgresql://app@db/app",
                                                                    "127.0.0.1:9000")
    assert (args.configmap, args.webhook, args.webhook_secret_file, args.webhook_group) == (
        "prod/badges:badge.json", None, Path("/run/secret"), "webhook")
    assert cli._settings(args) == Settings(schema="awards_here", statement_timeout_ms=120_000)
    listen = resolved("listen", "--group", "mailer")
    assert (listen.group, listen.schema, listen.lock_timeout) == ("mailer", "awards_here", 3.0)


def test_a_good_flag_repairs_a_bad_variable(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BADGED_PREFIX", "Bad")
    code, out, _ = run_main(capsys, "validate", "--badges", BADGES, "--prefix", "badged_")
    assert code == 0 and "3 badges valid" in out


# --- good values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1.5", 1.5), ("500ms", 0.5), ("1h", 3600.0), ("2.5m", 150.0),
    (".5", 0.5), ("1ms", 0.001), (" 5m ", 300.0), ("596h", 596 * 3600.0), ("0.5h", 1800.0),
])
def test_durations_parse_to_seconds(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    for name in ("BADGED_RESYNC", "BADGED_RECHECK_INTERVAL", "BADGED_LOCK_TIMEOUT", "BADGED_STATEMENT_TIMEOUT"):
        monkeypatch.setenv(name, value)
    options = load_options()
    assert (options.resync, options.recheck_interval, options.lock_timeout, options.statement_timeout) == (
        seconds, seconds, seconds, seconds)
    assert options.settings().lock_timeout_ms == round(seconds * 1000)
    assert load_options({"BADGED_RESYNC": value}, flag_names={"BADGED_RESYNC": "--resync"}).resync == seconds


@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True),
    ("false", False), ("0", False), ("no", False), ("OFF", False), ("", False),
])
def test_booleans(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("BADGED_ALLOW_EMPTY", value)
    assert load_options().allow_empty is expected


def test_choices_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BADGED_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("BADGED_OUTPUT", "Json")
    monkeypatch.setenv("BADGED_LOG_FORMAT", "console")
    options = load_options()
    assert (options.log_level, options.output, options.log_format) == ("warning", "json", "console")


def test_defaults_and_empty_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_options()
    assert defaults.model_dump(by_alias=True) == {
        "BADGED_BADGES": Path("badge.json"), "BADGED_DSN": None, "BADGED_PREFIX": "badged_",
        "BADGED_SCHEMA": "badged", "BADGED_CHANNEL": "badge_earned", "BADGED_ALLOW_EMPTY": False,
        "BADGED_LOCK_TIMEOUT": 3.0, "BADGED_STATEMENT_TIMEOUT": 60.0, "BADGED_RESYNC": 60.0,
        "BADGED_RECHECK_INTERVAL": 1.0, "BADGED_OUTPUT": "text", "BADGED_LOG_LEVEL": "info",
        "BADGED_LOG_FORMAT": "auto", "BADGED_HTTP": ":8080", "BADGED_CONFIGMAP": None, "BADGED_WEBHOOK": None,
        "BADGED_WEBHOOK_SECRET_FILE": None, "BADGED_WEBHOOK_GROUP": "webhook", "BADGED_SINK": None,
        "BADGED_SINK_GROUP": "nats", "BADGED_GROUP": None,
        "BADGED_ALLOW_VOLATILE": "",
    }
    assert defaults.settings() == Settings()
    assert load_options(defaults.model_dump(by_alias=True)) == defaults  # the defaults pass their own checks
    for name in NAMES:  # empty means unset, except for BADGED_HTTP, where it disables the server
        monkeypatch.setenv(name, "")
    assert load_options().model_dump(by_alias=True) == {**defaults.model_dump(by_alias=True), "BADGED_HTTP": ""}


def test_names_are_read_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("badged_resync", "abc")
    monkeypatch.setenv("Badged_Schema", "other")
    assert load_options() == Options()


def test_every_variable_is_a_prefixed_field_and_has_a_flag() -> None:
    assert all(name.startswith(ENV_PREFIX) for name in NAMES)
    assert len(NAMES) == len(Options.model_fields)
    assert sorted(cli._SETTING_OF_FLAG.values()) == NAMES


def test_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Deploy")]
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    assert sorted(set(re.findall(r"`(BADGED_[A-Z_]+)`", "\n".join(rows)))) == NAMES


def test_settings_stays_the_library_type_with_its_checks() -> None:
    with pytest.raises(ConfigError, match="prefix 'badged_\\\\n' must be 1-31"):
        Settings(prefix="badged_\n")
    with pytest.raises(ConfigError):
        Settings(schema="badged\n")
    with pytest.raises(ConfigError):
        Settings(lock_timeout_ms=0)
    assert Settings(prefix="bdg_", schema="awards_here", channel="earned").prefix == "bdg_"


# --- the Django app: the same model, the same sentences --------------------------------------------------

SHARED = ("BADGED_PREFIX", "BADGED_SCHEMA", "BADGED_CHANNEL", "BADGED_ALLOW_EMPTY", "BADGED_LOCK_TIMEOUT",
          "BADGED_STATEMENT_TIMEOUT", "BADGED_ALLOW_VOLATILE")


@pytest.fixture
def django_conf(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``badged.contrib.django.conf`` reading a plain object instead of a configured ``django.conf.settings``."""
    pytest.importorskip("django")
    from badged.contrib.django import conf

    def use(**values: Any) -> Any:
        monkeypatch.setattr(conf, "django_settings", SimpleNamespace(**values))
        return conf.get_settings()

    return use


def test_django_reads_only_the_shared_settings(django_conf: Any) -> None:
    from badged.contrib.django import conf

    assert conf.SHARED_SETTINGS == SHARED


@pytest.mark.parametrize(("name", "value", "sentence"), [bad for bad in BAD if bad[0] in SHARED],
                         ids=[i for i, bad in zip(BAD_IDS, BAD, strict=True) if bad[0] in SHARED])
def test_a_bad_django_setting_reads_as_the_bad_variable(django_conf: Any, name: str, value: str,
                                                        sentence: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as refused:
        django_conf(**{name: value})
    assert str(refused.value) == f"badged: settings.{sentence}"


@pytest.mark.parametrize(("name", "value", "sentence"), [
    ("BADGED_LOCK_TIMEOUT", True, f"BADGED_LOCK_TIMEOUT=True {DURATION}"),
    ("BADGED_LOCK_TIMEOUT", -1, f"BADGED_LOCK_TIMEOUT=-1 {POSITIVE}"),
    ("BADGED_STATEMENT_TIMEOUT", float("inf"), f"BADGED_STATEMENT_TIMEOUT=inf {DURATION}"),
    ("BADGED_STATEMENT_TIMEOUT", [60], f"BADGED_STATEMENT_TIMEOUT=[60] {DURATION}"),
    ("BADGED_ALLOW_EMPTY", 2, f"BADGED_ALLOW_EMPTY=2 {BOOLEAN}"),
    ("BADGED_SCHEMA", 3, f"BADGED_SCHEMA=3 {IDENTIFIER}"),
    ("BADGED_PREFIX", b"badged_", f"BADGED_PREFIX=b'badged_' {PREFIX}"),
])
def test_django_values_of_the_wrong_type_are_refused(django_conf: Any, name: str, value: object,
                                                     sentence: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as refused:
        django_conf(**{name: value})
    assert str(refused.value) == f"badged: settings.{sentence}"


def test_django_reports_every_bad_setting(django_conf: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured) as refused:
        django_conf(BADGED_ALLOW_EMPTY="maybe", BADGED_LOCK_TIMEOUT="abc")
    assert str(refused.value).splitlines() == [f"badged: settings.BADGED_ALLOW_EMPTY='maybe' {BOOLEAN}",
                                               f"badged: settings.BADGED_LOCK_TIMEOUT='abc' {DURATION}"]


def test_django_values_mean_what_the_variables_mean(django_conf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = django_conf()
    assert (defaults.badged, defaults.allow_empty, defaults.database) == (Settings(), False, "default")
    conf = django_conf(BADGED_LOCK_TIMEOUT=1.5, BADGED_STATEMENT_TIMEOUT="5m", BADGED_ALLOW_EMPTY="no",
                       BADGED_SCHEMA="awards_here", BADGED_PREFIX=None, BADGED_CHANNEL="")
    assert conf.badged == Settings(schema="awards_here", lock_timeout_ms=1500, statement_timeout_ms=300_000)
    assert conf.allow_empty is False  # bool("no") was True before
    assert django_conf(BADGED_LOCK_TIMEOUT=3, BADGED_ALLOW_EMPTY=True).allow_empty is True
    monkeypatch.setenv("BADGED_SCHEMA", "from_the_environment")  # the Django app reads its settings alone
    monkeypatch.setenv("BADGED_LOCK_TIMEOUT", "abc")
    assert django_conf().badged == Settings()


def test_options_from_names_what_it_is_given() -> None:
    with pytest.raises(OptionsError) as refused:
        options_from({"BADGED_RESYNC": "abc", "BADGED_OUTPUT": "json"}, label="config[{}]")
    assert refused.value.lines() == (f"config[BADGED_RESYNC]='abc' {DURATION}",)
    assert options_from({"BADGED_OUTPUT": "JSON"}).output == "json"
