"""``badged run --webhook``: signed, retried, at least once, position advanced only after a 2xx."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from badged.webhook import sign
from tests.conftest import SEED_BADGES
from tests.daemon_process import DaemonProcess
from tests.helpers import badge

SECRET = b"s3cret-for-tests"


class Receiver:
    """A webhook endpoint on loopback; answers each award's first POST with *first_status*."""

    def __init__(self, first_status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.first_status = first_status
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.changed:
                    key = self.headers["Idempotency-Key"]
                    seen_before = any(r["key"] == key for r in receiver.requests)
                    status = 200 if seen_before else receiver.first_status
                    receiver.requests.append({"key": key, "body": body, "headers": dict(self.headers),
                                              "status": status})
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/badges"

    def accepted(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if 200 <= r["status"] < 300]

    def wait_accepted(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.accepted()) >= count, timeout):
                raise AssertionError(f"{len(self.accepted())} of {count} accepted; requests: {self.requests[-3:]}")
            return self.accepted()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(first_status: int = 200) -> Receiver:
        receiver = Receiver(first_status)
        made.append(receiver)
        return receiver

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
    secret.write_bytes(SECRET + b"\n")
    return path, secret


def run_daemon(dsn: str, badges: Path, secret: Path, url: str) -> DaemonProcess:
    return DaemonProcess("--badges", str(badges), "--dsn", dsn, "--http", "", "--webhook", url,
                         "--webhook-secret-file", str(secret))


def test_events_are_signed_and_carry_an_idempotency_key(dsn: str, setup: tuple[Path, Path],
                                                        receiver_factory: Any) -> None:
    receiver = receiver_factory()
    daemon = run_daemon(dsn, *setup, receiver.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO signup VALUES (7)")
        (request,) = receiver.wait_accepted(1)
        body = request["body"]
        event = json.loads(body)
        assert event["badge"] == "welcome" and event["user_id"] == "7"
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert request["headers"]["X-Badged-Signature"] == expected == sign(SECRET, body)
        assert request["key"] == f"badged-award-{event['award_id']}"
        assert request["headers"]["Content-Type"] == "application/json"
        assert daemon.terminate() == 0
    finally:
        daemon.kill()


def test_a_failing_endpoint_is_retried_and_nothing_is_lost(dsn: str, setup: tuple[Path, Path],
                                                           receiver_factory: Any) -> None:
    receiver = receiver_factory(first_status=500)
    daemon = run_daemon(dsn, *setup, receiver.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO signup SELECT generate_series(1, 5)")
        accepted = receiver.wait_accepted(5)
        assert sorted(json.loads(r["body"])["user_id"] for r in accepted) == ["1", "2", "3", "4", "5"]
        failed_keys = {r["key"] for r in receiver.requests if r["status"] == 500}
        assert failed_keys == {r["key"] for r in accepted}, "every award failed once, then was retried"
        assert any(e.get("event") == "webhook.retry" for e in daemon.events) or daemon.wait_event("webhook.retry")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = 'webhook'").fetchone() == (5,)


def test_the_position_only_advances_after_a_2xx(dsn: str, setup: tuple[Path, Path], receiver_factory: Any) -> None:
    down = receiver_factory(first_status=503)
    down.first_status = 503
    daemon = run_daemon(dsn, *setup, down.url)
    try:
        daemon.wait_event("listen.started", group="webhook")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO signup VALUES (1)")
        daemon.wait_event("webhook.retry")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT delivered FROM badged.consumer_group WHERE name = 'webhook'").fetchone() == (0,)
    up = receiver_factory()
    again = run_daemon(dsn, *setup, up.url)
    try:
        (request,) = up.wait_accepted(1)
        assert json.loads(request["body"])["user_id"] == "1", "the event that never got a 2xx comes again"
        assert again.terminate() == 0
    finally:
        again.kill()


def test_webhook_without_a_secret_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "badged", "run", "--webhook", "http://127.0.0.1:9/x"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "--webhook needs --webhook-secret-file" in result.stderr
