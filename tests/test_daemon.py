"""``badged run`` as a real process, against real files and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from badged import health
from badged.daemon import Daemon, DaemonOptions, SinkSpec
from badged.errors import ConnectionFailed, LockTimeout
from badged.settings import Settings
from badged.sinks import Delivery
from badged.sinks.webhook import WebhookSink
from badged.sources.file import FileSource
from tests.conftest import SEED, SEED_BADGES
from tests.daemon_process import DaemonProcess, kubelet_update
from tests.helpers import SEED_OBJECTS, apply, badge, triggers

SEED_TEXT = (SEED / "badge.json").read_text()


def write_json(path: Path, items: list[dict[str, str]]) -> None:
    # write-then-rename, as editors and config tools do
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(items, indent=2))
    tmp.replace(path)



def start(daemons: list[DaemonProcess], *args: str) -> DaemonProcess:
    daemon = DaemonProcess("--http", "127.0.0.1:0", *args)
    daemons.append(daemon)
    return daemon


def test_an_edited_badge_file_is_applied(dsn: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES[:1])
    daemon = start(daemons, "--badges", str(path), "--dsn", dsn)
    daemon.wait_applied()
    assert triggers(dsn) == {SEED_OBJECTS["pionner"]}
    write_json(path, SEED_BADGES)
    daemon.wait_applied(timeout=5)
    assert triggers(dsn) == set(SEED_OBJECTS.values())
    assert daemon.terminate() == 0
    assert daemon.errors() == []


def test_kubelet_style_configmap_swaps_are_each_applied(dsn: str, tmp_path: Path,
                                                        daemons: list[DaemonProcess]) -> None:
    volume = tmp_path / "badges"
    volume.mkdir()
    kubelet_update(volume, {"badge.json": json.dumps(SEED_BADGES[:1])}, 0)
    daemon = start(daemons, "--badges", str(volume / "badge.json"), "--dsn", dsn)
    daemon.wait_applied()
    versions = [SEED_BADGES[:2], SEED_BADGES, SEED_BADGES[1:]]
    for generation, items in enumerate(versions, start=1):
        inode = (volume / "badge.json").lstat().st_ino
        kubelet_update(volume, {"badge.json": json.dumps(items)}, generation)
        assert (volume / "badge.json").lstat().st_ino == inode, "the symlink itself never changes"
        daemon.wait_applied(timeout=5)
        assert triggers(dsn) == {SEED_OBJECTS[b["code"]] for b in items}, f"swap {generation}"


def test_an_invalid_file_changes_nothing_until_it_is_fixed(dsn: str, tmp_path: Path,
                                                           daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    daemon = start(daemons, "--badges", str(path), "--dsn", dsn)
    daemon.wait_applied()
    assert daemon.get("/readyz")[0] == 200

    path.write_text(SEED_TEXT.replace('"code": "collector",', '"code": "collector"'))  # the seed's own typo
    invalid = daemon.wait_event("source.invalid", timeout=5)
    assert "invalid JSON at line" in invalid["errors"][0]
    assert triggers(dsn) == set(SEED_OBJECTS.values()), "last good state stays"
    status, body = daemon.get("/readyz")
    assert status == 503 and "invalid JSON" in json.loads(body)["reason"]
    assert 'badged_source_errors_total{reason="invalid"} 1.0' in daemon.get("/metrics")[1]

    write_json(path, [*SEED_BADGES, badge("x", "true", table="no_such_table")])
    failed = daemon.wait_event("reconcile.failed", timeout=5)
    assert "no_such_table" in failed["errors"][0]
    assert daemon.get("/readyz")[0] == 503

    write_json(path, SEED_BADGES[:2])
    daemon.wait_applied(timeout=5)
    assert triggers(dsn) == {SEED_OBJECTS["pionner"], SEED_OBJECTS["collector"]}
    assert daemon.get("/readyz")[0] == 200


def test_a_missing_file_is_not_ready_until_it_appears(dsn: str, tmp_path: Path,
                                                      daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    daemon = start(daemons, "--badges", str(path), "--dsn", dsn)
    daemon.wait_event("source.unreadable")
    assert daemon.get("/healthz") == (200, "ok\n")
    assert daemon.get("/readyz")[0] == 503
    write_json(path, SEED_BADGES)
    daemon.wait_applied(timeout=5)
    assert daemon.get("/readyz")[0] == 200


def test_a_file_written_before_the_watch_is_in_place_is_not_missed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon reads, then its watch starts: a write in between used to wait for the resync (60 s)."""
    from badged.sources import file

    path = tmp_path / "badge.json"
    watch = file.awatch

    def watch_after_a_write(*args: Any, **kwargs: Any) -> Any:
        write_json(path, SEED_BADGES)  # lands after the daemon's read, before inotify watches the directory
        return watch(*args, **kwargs)

    monkeypatch.setattr(file, "awatch", watch_after_a_write)

    async def first_change() -> None:
        stop = asyncio.Event()
        changes = FileSource(path).changes(stop)
        try:
            await asyncio.wait_for(anext(changes), 5)
        finally:
            stop.set()
            await changes.aclose()

    asyncio.run(first_change())


def test_drift_made_by_hand_is_repaired_by_resync(dsn: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    daemon = start(daemons, "--badges", str(path), "--dsn", dsn, "--resync", "0.5")
    daemon.wait_applied()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER badged_public$dummy_sketch$update_of ON dummy_sketch")
    repaired = daemon.wait_applied(timeout=5)
    assert repaired["changed"] == ["+ trigger badged_public$dummy_sketch$update_of on public.dummy_sketch"]
    assert "badged_public$dummy_sketch$update_of" in triggers(dsn)
    metrics = daemon.get("/metrics")[1]
    assert "badged_drift_repaired_total 1.0" in metrics
    assert 'badged_reconcile_total{result="in_sync"}' in metrics or "badged_reconcile_total" in metrics
    for name in ("badged_reconcile_duration_seconds", "badged_badges_desired 3.0",
                 "badged_last_success_timestamp_seconds"):
        assert name in metrics


def test_sigterm_exits_zero_within_two_seconds(dsn: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    daemon = start(daemons, "--badges", str(path), "--dsn", dsn)
    daemon.wait_applied()
    started = time.monotonic()
    assert daemon.terminate() == 0
    assert time.monotonic() - started < 2.0


def test_sigterm_while_waiting_on_a_lock_rolls_back_and_exits_zero(dsn: str, tmp_path: Path,
                                                                   daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    with psycopg.connect(dsn) as app:
        app.execute("LOCK TABLE dummy_sketch IN ACCESS EXCLUSIVE MODE")  # a long app transaction
        daemon = start(daemons, "--badges", str(path), "--dsn", dsn, "--lock-timeout", "30")
        daemon.wait_event("daemon.started")
        with psycopg.connect(dsn, autocommit=True) as watcher:
            waiting = _wait_until(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'badged' AND wait_event_type = "
                "'Lock'").fetchone() == (1,))
        assert waiting, "the daemon should be waiting for the table lock"
        started = time.monotonic()
        assert daemon.terminate() == 0
        assert time.monotonic() - started < 2.0
        app.rollback()
    assert triggers(dsn) == set(), "the cancelled transaction applied nothing"


def _wait_until(check: Any, timeout: float = 5.0) -> bool:
    """Poll a database condition (no event exists for 'a backend is waiting on a lock')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_two_daemons_on_one_database_agree(dsn: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    first = start(daemons, "--badges", str(path), "--dsn", dsn, "--resync", "0.3")
    second = start(daemons, "--badges", str(path), "--dsn", dsn, "--resync", "0.3")
    first.wait_reconciled()
    second.wait_reconciled()
    write_json(path, SEED_BADGES[1:])
    for daemon in (first, second):
        daemon.wait_for(lambda e: e.get("event") == "reconcile.done" and e.get("badges") == 2, timeout=5,
                        what="a reconcile of the new file")
    for daemon in (first, second):  # a few resyncs each, racing on the advisory lock
        for _ in range(3):
            daemon.wait_reconciled(timeout=5)
    assert triggers(dsn) == {SEED_OBJECTS["collector"], SEED_OBJECTS["star"]}
    applied = [e for d in (first, second) for e in d.events if e.get("event") == "reconcile.done" and e["changes"]]
    assert len(applied) == 2, "the initial apply and the edit, each applied by exactly one daemon"
    assert first.errors() == [] and second.errors() == []
    assert first.terminate() == 0 and second.terminate() == 0


@pytest.mark.slow
def test_the_daemon_survives_a_database_restart(restartable_server: Any, tmp_path: Path,
                                                daemons: list[DaemonProcess]) -> None:
    server = restartable_server
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES[:1])
    daemon = start(daemons, "--badges", str(path), "--dsn", server.dsn, "--resync", "0.5")
    daemon.wait_applied()
    server.stop()
    write_json(path, SEED_BADGES)
    retry = daemon.wait_event("reconcile.retry", timeout=5)
    assert retry["retry_in"] <= 30
    assert daemon.get("/readyz")[0] == 503
    assert daemon.get("/healthz")[0] == 200, "alive while the database is away: no crash loop"
    server.start()
    daemon.wait_applied(timeout=40)
    assert triggers(server.dsn) == set(SEED_OBJECTS.values())
    assert daemon.get("/readyz")[0] == 200
    assert daemon.process.poll() is None
    retries = [e for e in daemon.events if e.get("event") == "reconcile.retry"]
    assert len(retries) < 20, "backoff, not a spin"
    assert daemon.terminate() == 0


@pytest.mark.slow
def test_file_events_during_an_outage_wait_for_the_backoff(tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    # every event in badge.json's directory used to skip the backoff: 172-180 attempts in a 20 s outage
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    daemon = start(daemons, "--badges", str(path), "--dsn", "postgresql://postgres@127.0.0.1:1/postgres")
    daemon.wait_event("reconcile.retry", timeout=10)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # a busy directory: another file, and badge.json touched
        (tmp_path / "other.txt").write_text(str(time.monotonic()))
        path.touch()
        time.sleep(0.05)
    time.sleep(0.5)  # the last lines reach the reader
    retries = [e for e in daemon.drain() if e.get("event") == "reconcile.retry"]
    # backoff from 0.5 s doubling: at most ~8 attempts in 6 s, whatever the events
    assert len(retries) <= 10, f"{len(retries)} attempts in 6 s: file events skip the backoff"
    assert daemon.terminate() == 0


def test_bad_flags_are_clear_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    for args, message in [
        (["--http", "nonsense"], "--http 'nonsense' must look like"),
        (["--resync", "0"], "must be more than 0 seconds"),
    ]:
        command = [sys.executable, "-m", "badged", "run", "--badges", str(tmp_path / "b.json"), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False,
                                env={**os.environ, "BADGED_DSN": ""})
        assert result.returncode == 1
        assert message in result.stderr
        assert "Traceback" not in result.stderr


# -- the one loop recovers from anything; background tasks that die are reported and restarted ---------


@pytest.fixture
def reconciler_without_rights(admin_dsn: str, dsn: str) -> Iterator[tuple[str, str]]:
    """badged's schema made by the superuser, and a login role with no right on it: (its DSN, its name)."""
    role = f"badged_rec_{uuid.uuid4().hex[:8]}"
    apply(dsn, SEED_BADGES)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
    try:
        yield conninfo.make_conninfo(dsn, user=role), role
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_missing_right_keeps_the_daemon_alive_and_retrying_until_granted(
        dsn: str, reconciler_without_rights: tuple[str, str], tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    role_dsn, role = reconciler_without_rights
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    daemon = start(daemons, "--badges", str(path), "--dsn", role_dsn, "--resync", "600")
    failed = daemon.wait_event("reconcile.failed", timeout=10)
    daemon.wait_event("reconcile.failed", timeout=5)  # retried with backoff, though the resync is 10 min away
    assert failed["cause"] == "privilege"
    assert "PostgreSQL refused to reconcile: permission denied for schema badged" in failed["errors"][0]
    status, body = daemon.get("/readyz")
    assert status == 503 and "permission denied for schema badged" in json.loads(body)["reason"]
    assert daemon.process.poll() is None, "alive"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA badged TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA badged "
                             "TO {0}").format(sql.Identifier(role)))
    daemon.wait_reconciled(timeout=15)
    daemon.wait_event("daemon.pass", timeout=5)
    assert daemon.get("/readyz")[0] == 200
    assert daemon.terminate() == 0


def test_after_a_lock_timeout_the_daemon_backs_off_harder(tmp_path: Path) -> None:
    """Each try queues the app's writes behind our DDL for up to lock_timeout: never retry at 0.5 s."""
    daemon = Daemon(FileSource(tmp_path / "badge.json"),
                    DaemonOptions(dsn="", settings=Settings(lock_timeout_ms=3000)))
    after_lock = [daemon._retry_delay(LockTimeout("held")) for _ in range(4)]
    assert 6.0 <= after_lock[0] <= 12.0, "the first retry waits 2-4 lock timeouts"
    assert all(delay <= 30.0 for delay in after_lock), "still capped at 30 s"
    assert daemon._retry_delay(ConnectionFailed("lost")) <= 0.5, "other failures start at 0.5 s"


class Endpoint:
    """A webhook receiver answering 200, on loopback."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def in_process(daemon: Daemon, scenario: Callable[[Callable[[str], Awaitable[tuple[int, str]]]], Awaitable[None]]
               ) -> None:
    """Run *daemon* in this process while *scenario* probes it over HTTP; then stop it (it must return 0)."""

    async def get(path: str) -> tuple[int, str]:
        def fetch() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}{path}", timeout=5) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()
            except OSError as exc:  # URLError too: nothing serves (the HTTP server is down, being restarted)
                return 0, str(exc)
        return await asyncio.to_thread(fetch)

    async def main() -> None:
        running = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(_until(lambda: daemon.health.get()[0]), 15)
            await scenario(get)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(running, 10) == 0

    asyncio.run(main())


async def _until(check: Callable[[], bool], what: str = "condition") -> None:
    while not check():
        await asyncio.sleep(0.02)


async def _until_http(get: Callable[[str], Awaitable[tuple[int, str]]], path: str,
                      check: Callable[[int, str], bool], timeout: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await get(path)
        if check(status, body):
            return status, body
        assert time.monotonic() < deadline, f"{path}: {status} {body[:300]}"
        await asyncio.sleep(0.02)


def test_a_webhook_sink_that_dies_fails_readyz_and_is_restarted(dsn: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    items = [*SEED_BADGES, badge("welcome", "true", table="signup")]
    endpoint = Endpoint()
    dying = threading.Event()
    dying.set()
    send = WebhookSink.send

    async def send_or_die(self: WebhookSink, event: Any) -> Delivery:
        if dying.is_set():
            raise RuntimeError("a bug in the webhook sink")
        return await send(self, event)

    monkeypatch.setattr(WebhookSink, "send", send_or_die)
    path = tmp_path / "badge.json"
    write_json(path, items)
    daemon = Daemon(FileSource(path), DaemonOptions(dsn=dsn, settings=Settings(), http="127.0.0.1:0",
                                                    sinks=(SinkSpec("webhook", "webhook",
                                                                    lambda: WebhookSink(endpoint.url, b"secret")),)))

    async def scenario(get: Callable[[str], Awaitable[tuple[int, str]]]) -> None:
        users = iter(range(1, 1000))

        def sign_up(status: int, _body: str) -> bool:
            # the webhook's group starts from the moment the forwarder first connects: award until it gets one
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO signup VALUES (%s)", (next(users),))
            return status == 503

        _, body = await _until_http(get, "/readyz", sign_up)
        assert "webhook: the webhook task died (RuntimeError: a bug in the webhook sink); restarting" in body
        metrics = (await get("/metrics"))[1]
        assert 'badged_task_failures_total{task="webhook"}' in metrics and "badged_ready 0.0" in metrics
        dying.clear()  # the next forwarder the supervisor starts works
        await _until_http(get, "/readyz", lambda status, _: status == 200)
        await asyncio.wait_for(_until(lambda: bool(endpoint.bodies)), 10)  # the batch it died on, sent again
        metrics = (await get("/metrics"))[1]
        assert 'badged_task_up{task="webhook"} 1.0' in metrics
        assert 'badged_events_delivered_total{sink="webhook"}' in metrics
        lag_count = re.search(r'badged_event_delivery_lag_seconds_count\{sink="webhook"\} (\S+)', metrics)
        assert lag_count and float(lag_count[1]) >= 1, "every delivery is observed in the lag histogram"

    try:
        in_process(daemon, scenario)
    finally:
        endpoint.server.shutdown()


def test_a_dead_http_server_and_a_dead_watch_are_restarted(dsn: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    class FailingOnce(ThreadingHTTPServer):
        failed = False

        def service_actions(self) -> None:
            if not FailingOnce.failed:
                FailingOnce.failed = True
                raise RuntimeError("the HTTP server's loop broke")

    monkeypatch.setattr(health, "ThreadingHTTPServer", FailingOnce)
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES[:1])
    watch_dies = threading.Event()
    watch_dies.set()

    class DyingWatch(FileSource):
        async def changes(self, stop: asyncio.Event) -> AsyncIterator[None]:
            if watch_dies.is_set():
                raise RuntimeError("inotify broke")
            async for change in super().changes(stop):
                yield change

    daemon = Daemon(DyingWatch(path), DaemonOptions(dsn=dsn, settings=Settings(), http="127.0.0.1:0"))

    async def scenario(get: Callable[[str], Awaitable[tuple[int, str]]]) -> None:
        port = daemon.http_port
        _, body = await _until_http(get, "/readyz", lambda status, _: status == 503)
        assert "watch: the watch task died (RuntimeError: inotify broke); restarting" in body
        watch_dies.clear()
        await _until_http(get, "/readyz", lambda status, _: status == 200)
        metrics = (await get("/metrics"))[1]
        assert 'badged_task_failures_total{task="http"} 1.0' in metrics, "the HTTP server died once"
        assert daemon.http_port == port, "and serves again on the same port"
        assert 'badged_task_failures_total{task="watch"}' in metrics
        write_json(path, SEED_BADGES)  # the new watch sees an edit
        await asyncio.wait_for(_until(lambda: triggers(dsn) == set(SEED_OBJECTS.values())), 10)

    in_process(daemon, scenario)


def test_an_unexpected_exception_in_a_pass_is_recovered_not_fatal(dsn: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from badged import daemon as daemon_module

    calls = {"n": 0}
    reconcile = daemon_module.reconcile

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise KeyError("a bug in a pass")
        return reconcile(*args, **kwargs)

    monkeypatch.setattr(daemon_module, "reconcile", flaky)
    path = tmp_path / "badge.json"
    write_json(path, SEED_BADGES)
    daemon = Daemon(FileSource(path), DaemonOptions(dsn=dsn, settings=Settings(), http="127.0.0.1:0"))

    async def scenario(get: Callable[[str], Awaitable[tuple[int, str]]]) -> None:
        assert calls["n"] == 3, "two passes failed, the third (after backoff) succeeded"
        metrics = (await get("/metrics"))[1]
        assert 'badged_task_failures_total{task="reconcile"} 2.0' in metrics
        assert 'badged_reconcile_total{result="error"} 2.0' in metrics

    in_process(daemon, scenario)
    assert triggers(dsn) == set(SEED_OBJECTS.values())


def test_a_configmap_follower_that_dies_ends_the_watch_for_the_daemon_to_restart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to die unseen, leaving changes() waiting forever on a watch that no longer ran."""
    pytest.importorskip("lightkube")
    from badged.sources import configmap

    async def die(self: Any) -> None:
        raise RuntimeError("a bug in the follower")

    monkeypatch.setattr(configmap._Follower, "run", die)
    config: Any = SimpleNamespace(cluster=SimpleNamespace(server="https://kubernetes.invalid"))
    source = configmap.ConfigMapSource("default", "badges", config=config)

    async def follow() -> None:
        async for _ in source.changes(asyncio.Event()):
            pass

    with pytest.raises(RuntimeError, match="a bug in the follower"):
        asyncio.run(asyncio.wait_for(follow(), 5))
