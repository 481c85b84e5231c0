"""``badged run --webhook``: Standard Webhooks signatures, retries, parking, replay; position after a verdict.

The sink itself (classification, headers, Retry-After) is tested in ``test_webhook_sink``; these run the
daemon as users do and check what a receiver and the database see.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import SEED_BADGES
from tests.daemon_process import DaemonProcess
from tests.helpers import badge

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

#: (parsed event, how many times this award was posted before) -> (status, extra headers)
Answer = Callable[[dict[str, Any], int], tuple[int, dict[str, str]]]


def accept(_event: dict[str, Any], _before: int) -> tuple[int, dict[str, str]]:
    return 200, {}


class Receiver:
    """A webhook endpoint on loopback that verifies every request with the standardwebhooks package."""

    def __init__(self, answer: Answer = accept) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer = answer
        self.changed = threading.Condition()
        receiver = self
        verifier = Webhook(SECRET)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                event = verifier.verify(body, headers)  # raises on a bad signature: the test sees a 500 storm
                with receiver.changed:
                    before = sum(1 for r in receiver.requests if r["id"] == headers["webhook-id"])
                    status, extra = receiver.answer(event, before)
                    receiver.requests.append({"id": headers["webhook-id"], "event": event, "status": status,
                                              "headers": headers, "method": self.command, "path": self.path})
                    receiver.changed.notify_all()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # a followed redirect would arrive here
                with receiver.changed:
                    receiver.requests.append({"id": None, "event": None, "status": 200, "headers": {},
                                              "method": "GET", "path": self.path})
                    receiver.changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/badges"

    def accepted(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if 200 <= r["status"] < 300 and r["method"] == "POST"]

    def wait(self, what: Callable[[], bool], describe: str, timeout: float = 20.0) -> None:
        with self.changed:
            if not self.changed.wait_for(what, timeout):
                raise AssertionError(f"{describe} not seen within {timeout} s; requests: {self.requests[-3:]}")

    def wait_accepted(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        self.wait(lambda: len(self.accepted()) >= count, f"{count} accepted", timeout)
        return self.accepted()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(answer: Answer = accept) -> Receiver:
        made.append(Receiver(answer))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def setup(dsn: str, tmp_path: Path) -> tuple[Path, Path]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    path = tmp_path / "badge.json"
    path.write_text(json.dumps([*SEED_BADGES, badge("welcome", "true", table="signup", name="Welcome")]))
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    return path, secret


def run_daemon(dsn: str, badges: Path, secret: Path, url: str) -> DaemonProcess:
    return DaemonProcess("--badges", str(badges), "--dsn", dsn, "--http", "", "--webhook", url,
                         "--webhook-secret-file", str(secret))


def sign_up(dsn: str, *users: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user in users:
            conn.execute("INSERT INTO signup VALUES (%s)", (user,))


def delivered(dsn: str, group: str = "webhook") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = %s", (group,)).fetchone()
    return int(row[0]) if row else 0


def badged_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "badged", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_events_are_signed_as_standard_webhooks_and_verify_with_its_library(
        dsn: str, setup: tuple[Path, Path], receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    daemon = run_daemon(dsn, *setup, receiver.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        sign_up(dsn, 7)
        (request,) = receiver.wait_accepted(1)
        event = request["event"]
        assert event["badge"] == "welcome" and event["user_id"] == "7"
        assert request["id"] == f"badged-award-{event['award_id']}", "webhook-id is the award's idempotency key"
        assert request["headers"]["content-type"] == "application/json"
        assert request["headers"]["user-agent"].startswith("badged/")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()


def test_a_failing_endpoint_is_retried_in_order_and_nothing_is_lost(
        dsn: str, setup: tuple[Path, Path], receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(lambda _event, before: (503 if before == 0 else 200, {"Retry-After": "0"}))
    daemon = run_daemon(dsn, *setup, receiver.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        sign_up(dsn, 1, 2, 3, 4, 5)
        accepted = receiver.wait_accepted(5)
        assert [r["event"]["user_id"] for r in accepted] == ["1", "2", "3", "4", "5"], "in award order"
        failed = [r["id"] for r in receiver.requests if r["status"] == 503]
        assert failed == [r["id"] for r in accepted], "every award failed once, then was retried before the next"
        daemon.wait_event("sink.retry")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    assert delivered(dsn) == 5


def test_the_position_only_advances_after_a_verdict(dsn: str, setup: tuple[Path, Path],
                                                    receivers: Callable[..., Receiver]) -> None:
    down = receivers(lambda _event, _before: (503, {}))
    daemon = run_daemon(dsn, *setup, down.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        sign_up(dsn, 1)
        daemon.wait_event("sink.retry")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    assert delivered(dsn) == 0
    up = receivers()
    again = run_daemon(dsn, *setup, up.url)
    try:
        (request,) = up.wait_accepted(1)
        assert request["event"]["user_id"] == "1", "the event that never got a 2xx comes again"
        assert again.terminate() == 0
    finally:
        again.kill()


def test_a_redirect_is_not_followed_and_the_event_is_parked(dsn: str, setup: tuple[Path, Path],
                                                            receivers: Callable[..., Receiver]) -> None:
    """urllib used to turn the POST into a GET without a body, and count the GET's 200 as delivered."""
    receiver = receivers(lambda event, _before: (302, {"Location": "/elsewhere"}) if event["user_id"] == "1"
                         else (200, {}))
    daemon = run_daemon(dsn, *setup, receiver.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        sign_up(dsn, 1, 2)
        receiver.wait_accepted(1)
        parked = daemon.wait_event("sink.parked")
        assert parked["status"] == 302 and "/elsewhere" in parked["reason"]
        assert [r["method"] for r in receiver.requests] == ["POST", "POST"], "no GET: the redirect was not followed"
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    listing = badged_cli("events", "parked", "--dsn", dsn, "--output", "json")
    assert listing.returncode == 0, listing.stderr
    (row,) = json.loads(listing.stdout)
    assert (row["group"], row["user_id"], row["status"], row["sink"]) == ("webhook", "1", 302, "webhook")


def test_a_rejected_event_is_parked_delivery_goes_on_and_a_replay_sends_it(
        dsn: str, setup: tuple[Path, Path], receivers: Callable[..., Receiver]) -> None:
    refuse = {"2"}
    receiver = receivers(lambda event, _before: (410, {}) if event["user_id"] in refuse else (200, {}))
    daemon = run_daemon(dsn, *setup, receiver.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        sign_up(dsn, 1, 2, 3, 4)
        accepted = receiver.wait_accepted(3)
        assert [r["event"]["user_id"] for r in accepted] == ["1", "3", "4"], "one 410 blocks nothing after it"
        assert daemon.wait_event("sink.parked")["status"] == 410
        assert [r["status"] for r in receiver.requests].count(410) == 1, "a 4xx is not retried"
        listing = badged_cli("events", "parked", "--dsn", dsn)
        assert listing.returncode == 0 and "HTTP 410" in listing.stdout and "1 parked" in listing.stdout

        refuse.clear()  # the receiver was fixed
        replay = badged_cli("events", "replay", "--all", "--dsn", dsn)
        assert replay.returncode == 0 and replay.stdout.startswith("1 parked events marked for replay"), replay
        receiver.wait_accepted(4)
        assert receiver.accepted()[-1]["event"]["user_id"] == "2"
        daemon.wait_event("sink.replayed")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    assert "0 parked" in badged_cli("events", "parked", "--dsn", dsn).stdout
    assert delivered(dsn) == 4


def test_replay_says_what_to_choose(dsn: str, setup: tuple[Path, Path]) -> None:
    done = badged_cli("events", "replay", "--dsn", dsn)
    assert done.returncode == 1 and "--award ID (repeatable) or --all" in done.stderr


def test_webhook_without_a_secret_is_a_clear_error() -> None:
    result = badged_cli("run", "--webhook", "http://127.0.0.1:9/x")
    assert result.returncode == 1
    assert "--webhook needs --webhook-secret-file" in result.stderr


def test_events_secret_prints_a_secret_the_standard_library_accepts() -> None:
    result = badged_cli("events", "secret")
    assert result.returncode == 0
    secret = result.stdout.strip()
    assert secret.startswith("whsec_")
    Webhook(secret)  # base64 after the prefix, as the standard's libraries expect
