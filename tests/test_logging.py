"""A quiet library: badged logs through ``logging`` and configures nothing; the CLI renders every record."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from badged.log_output import configure_logging
from badged.logs import get_logger
from tests.helpers import welcome_on_signup

APP_SCRIPT = textwrap.dedent("""
    import sys, logging
    import psycopg
    import badged
    if sys.argv[2] == "logging":
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        conn.execute("INSERT INTO signup VALUES (7)")
    with badged.subscribe(sys.argv[1], since=0, poll_interval=0.2) as events:
        for event in events:
            print("app:", event.user_id, event.badge)
            break
""")


@pytest.fixture
def signup(dsn: str) -> str:
    return welcome_on_signup(dsn)


def _app(dsn: str, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", APP_SCRIPT, dsn, mode], capture_output=True, text=True,
                          timeout=60, check=True)


def test_subscribe_from_a_plain_script_writes_only_the_apps_own_lines(signup: str) -> None:
    done = _app(signup, "quiet")
    assert done.stdout == "app: 7 welcome\n"
    assert done.stderr == "", "a library configures no handler: Python's last resort prints nothing below WARNING"


def test_the_apps_logging_configuration_receives_badgeds_records(signup: str) -> None:
    done = _app(signup, "logging")
    assert done.stdout == "app: 7 welcome\n"
    assert "badged.listen INFO listen.started group=None channel=badge_earned" in done.stderr


@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    saved = logging.getLogger().level, logging.getLogger().handlers[:]
    yield buffer
    root = logging.getLogger()
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def test_the_cli_renders_badgeds_and_other_libraries_records_as_json_lines(stderr: io.StringIO) -> None:
    configure_logging("info", "json", stderr)
    get_logger("badged.listen").warning("listen.reconnect", error="server closed the connection", retry_in=0.5)
    logging.getLogger("psycopg").warning("connection %s lost", "x")
    logging.getLogger("httpx").info("HTTP Request: POST http://hook 200")  # chatty at INFO: kept quiet
    try:
        raise ValueError("boom")
    except ValueError as exc:
        get_logger("badged.daemon").error("daemon.crashed", error="boom", exc_info=exc)
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["listen.reconnect", "connection x lost", "daemon.crashed"]
    assert lines[0]["error"] == "server closed the connection" and lines[0]["retry_in"] == 0.5
    assert lines[0]["level"] == "warning" and "timestamp" in lines[0]
    assert lines[1]["logger"] == "psycopg"
    assert "ValueError: boom" in lines[2]["exception"]


def test_the_log_level_filters_badgeds_records(stderr: io.StringIO) -> None:
    configure_logging("warning", "json", stderr)
    get_logger("badged.listen").info("listen.started")
    get_logger("badged.listen").warning("listen.reconnect")
    assert [json.loads(line)["event"] for line in stderr.getvalue().splitlines()] == ["listen.reconnect"]
