"""``badged run`` as a real process, against real files and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import SEED, SEED_BADGES
from tests.daemon_process import DaemonProcess, kubelet_update
from tests.helpers import SEED_OBJECTS, badge, triggers

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
