"""No award lost under concurrent writes, and no application write ever waits, deadlocks or fails because of badged.

Before issue 10, two transactions inserting a user's 4th and 5th sketch at the same
time each counted 4, and nobody ever awarded Collector (write skew). Triggers now
take the user's key with a try-lock before checking, defer the check to
``<schema>.recheck`` when another transaction holds it (or when a REPEATABLE READ
snapshot may be stale), and ``badged run`` finishes deferred checks (``recheck``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from badged.db import connect
from badged.locks import STRIPES, user_lock
from badged.recheck import Result, drain
from badged.settings import Settings
from tests.conftest import SEED_BADGES
from tests.daemon_process import DaemonProcess
from tests.helpers import apply, awards, badge, badges_from

SETTINGS = Settings()
#: Every writer gives up on any lock after this long: a write that waited on another transaction fails the test.
APP_LOCK_TIMEOUT = "2s"


def add_users(conn: psycopg.Connection[Any], count: int) -> list[int]:
    return [row[0] for row in conn.execute(
        "INSERT INTO auth_user (username) SELECT 'user' || g || '-' || gen_random_uuid() "
        "FROM generate_series(1, %s) g RETURNING id", (count,))]


def missing_collectors(conn: psycopg.Connection[Any]) -> int:
    """Users with 5 sketches or more who do not hold Collector."""
    row = conn.execute("""
        SELECT count(*) FROM (SELECT user_id FROM dummy_sketch GROUP BY user_id HAVING count(*) >= 5) s
        WHERE NOT EXISTS (SELECT 1 FROM badged.award WHERE badge = 'collector' AND user_id = s.user_id::text)
    """).fetchone()
    return int(row[0]) if row else -1


def rechecks(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM badged.recheck").fetchone()
    return int(row[0]) if row else -1


def drain_all(dsn: str, items: list[dict[str, str]]) -> None:
    with connect(dsn, SETTINGS) as conn:
        drained = drain(conn, badges_from(items), SETTINGS)
    assert drained.left == 0 and drained.counts[Result.FAILED] == 0, drained


@dataclass
class Writers:
    """Application clients inserting sketches, each in a transaction of its own that stays open a moment."""

    dsn: str
    isolation: str = "READ COMMITTED"
    hold_seconds: float = 0.02
    errors: list[str] = field(default_factory=list)

    def run(self, users: list[int], per_user: int, clients: int) -> None:
        tasks: queue.Queue[int] = queue.Queue()
        for user in users:  # a user's inserts side by side: the clients take them at the same time
            for _ in range(per_user):
                tasks.put(user)
        threads = [threading.Thread(target=self._client, args=(tasks,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    def _client(self, tasks: queue.Queue[int]) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"SET lock_timeout = '{APP_LOCK_TIMEOUT}'")
            conn.execute(f"SET deadlock_timeout = '{APP_LOCK_TIMEOUT}'")
            while True:
                try:
                    user = tasks.get_nowait()
                except queue.Empty:
                    return
                try:
                    with conn.transaction():
                        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {self.isolation}")
                        conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (user,))
                        conn.execute("SELECT pg_sleep(%s)", (self.hold_seconds,))  # the app's own work
                except psycopg.Error as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
def test_sixteen_concurrent_writers_lose_no_award(dsn: str, conn: psycopg.Connection[Any], isolation: str) -> None:
    """Each user gets exactly 5 sketches from 5 overlapping transactions: only a check that sees all 5 awards."""
    apply(dsn, SEED_BADGES)
    users = add_users(conn, 48)
    writers = Writers(dsn, isolation)
    writers.run(users, per_user=5, clients=16)
    assert writers.errors == [], "no application write may fail, wait or deadlock because of badged"
    assert conn.execute("SELECT count(*) FROM dummy_sketch").fetchone() == (5 * len(users),)
    deferred = rechecks(conn)
    drain_all(dsn, SEED_BADGES)
    missed = missing_collectors(conn)
    assert missed == 0, f"{missed} of {len(users)} users have 5 sketches and no Collector"
    assert deferred > 0, "concurrent checks of one user were deferred, not raced"
    assert rechecks(conn) == 0


class Session:
    """One application connection whose statements run in a thread, so the test sees whether one waits."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute(f"SET lock_timeout = '{APP_LOCK_TIMEOUT}'")
        self.conn.commit()

    def run(self, statement: str, *params: Any, within: float = 1.0) -> None:
        """Run *statement*; fail if it has not finished within *within* seconds (it waited on someone)."""
        failure: list[BaseException] = []

        def target() -> None:
            try:
                self.conn.execute(statement, params)
            except BaseException as exc:  # reported in the test's thread
                failure.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join(within)
        assert not thread.is_alive(), f"{statement!r} waited on another transaction"
        assert not failure, failure

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def sessions(dsn: str) -> Iterator[tuple[Session, Session]]:
    first, second = Session(dsn), Session(dsn)
    yield first, second
    first.close()
    second.close()


def test_two_transactions_writing_for_two_users_in_opposite_orders_both_commit(
        dsn: str, conn: psycopg.Connection[Any], sessions: tuple[Session, Session]) -> None:
    """A then B against B then A, each write earning an award: no wait, no deadlock (it was both before)."""
    apply(dsn, SEED_BADGES)
    ann, bob = add_users(conn, 2)
    for user in (ann, bob):
        conn.execute("INSERT INTO dummy_sketch (user_id) SELECT %s FROM generate_series(1, 4)", (user,))
    first, second = sessions
    insert = "INSERT INTO dummy_sketch (user_id) VALUES (%s)"
    first.run(insert, ann)  # earns Ann's Collector (not committed yet)
    second.run(insert, bob)  # earns Bob's
    first.run(insert, bob)  # checking Bob while the second transaction does: deferred, never waits
    second.run(insert, ann)
    first.conn.commit()
    second.conn.commit()
    assert awards(conn) == {("collector", str(ann)), ("collector", str(bob))}
    drain_all(dsn, SEED_BADGES)
    assert awards(conn) == {("collector", str(ann)), ("collector", str(bob))}


def test_an_award_committed_after_a_repeatable_read_snapshot_does_not_fail_the_write(
        dsn: str, conn: psycopg.Connection[Any], sessions: tuple[Session, Session]) -> None:
    """ON CONFLICT raises a serialization failure for a row the snapshot cannot see: the trigger catches it."""
    apply(dsn, SEED_BADGES)
    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT %s FROM generate_series(1, 4)", (ann,))
    old, _ = sessions
    old.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    old.run("SELECT count(*) FROM dummy_sketch")  # its snapshot: 4 sketches, no award
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (ann,))  # the 5th: Collector, committed
    old.run("INSERT INTO dummy_sketch (user_id) VALUES (%s)", ann)  # sees 4 + its own: tries to award again
    old.conn.commit()
    assert awards(conn) == {("collector", str(ann))}
    drain_all(dsn, SEED_BADGES)


def test_a_check_waits_for_no_one_and_is_finished_once_the_other_transaction_ends(
        dsn: str, conn: psycopg.Connection[Any], sessions: tuple[Session, Session]) -> None:
    """badged's own transactions (here: one holding Ann's key, as backfill or the drain do) never delay a write."""
    items = [*SEED_BADGES, badge("big", "hit_views >= 50")]
    apply(dsn, items)
    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT %s FROM generate_series(1, 4)", (ann,))
    holder, app = sessions
    holder.run(sql.SQL("SELECT {}").format(user_lock(sql.Literal(str(ann)), SETTINGS)).as_string(holder.conn))
    app.run("INSERT INTO dummy_sketch (user_id, hit_views) VALUES (%s, 60)", ann)
    app.conn.commit()
    assert awards(conn) == set(), "both checks were deferred: the key was busy"
    with connect(dsn, SETTINGS) as drainer:
        busy = drain(drainer, badges_from(items), SETTINGS)
        assert (busy.counts[Result.BUSY], busy.left) == (1, 1), "still busy: left for the next pass"
        holder.conn.commit()
        done = drain(drainer, badges_from(items), SETTINGS)
    assert (done.counts[Result.AWARDED], done.awards, done.left) == (1, 2, 0)
    assert awards(conn) == {("collector", str(ann)), ("big", str(ann))}


@pytest.mark.slow
def test_a_100000_row_insert_over_100000_users_fits_the_default_lock_table(
        dsn: str, conn: psycopg.Connection[Any]) -> None:
    """Users are hashed onto STRIPES keys: a statement over any number of users takes at most that many locks."""
    (setting,) = conn.execute("SHOW max_locks_per_transaction").fetchone() or ("",)
    assert setting == "64", "this test is about PostgreSQL's default lock table"
    apply(dsn, SEED_BADGES)
    conn.execute("INSERT INTO auth_user (username) SELECT 'bulk' || g FROM generate_series(1, 100000) g")
    with conn.transaction():
        conn.execute("INSERT INTO dummy_sketch (user_id) SELECT id FROM auth_user")  # 100,000 checks, one per user
        (held,) = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND pid = pg_backend_pid()").fetchone() or (0,)
    assert 0 < held <= STRIPES
    assert conn.execute("SELECT count(*) FROM dummy_sketch").fetchone() == (100_000,)


@pytest.mark.slow
def test_badged_run_finishes_deferred_checks_on_its_own_within_seconds(
        dsn: str, conn: psycopg.Connection[Any], sessions: tuple[Session, Session], tmp_path: Path,
        daemons: list[DaemonProcess]) -> None:
    path = tmp_path / "badge.json"
    path.write_text(json.dumps(SEED_BADGES))
    daemon = DaemonProcess("--http", "127.0.0.1:0", "--badges", str(path), "--dsn", dsn, "--recheck-interval", "0.2")
    daemons.append(daemon)
    daemon.wait_applied()
    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT %s FROM generate_series(1, 4)", (ann,))
    holder, _ = sessions
    holder.run(sql.SQL("SELECT {}").format(user_lock(sql.Literal(str(ann)), SETTINGS)).as_string(holder.conn))
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (ann,))  # the 5th sketch: deferred, key busy
    assert awards(conn) == set()
    time.sleep(0.5)
    assert awards(conn) == set() and rechecks(conn) == 1, "busy: the drain leaves it while the key is held"
    holder.conn.commit()
    started = time.monotonic()
    daemon.wait_event("recheck.drained", timeout=5, awarded=1)
    assert awards(conn) == {("collector", str(ann))}
    assert time.monotonic() - started < 2
    assert rechecks(conn) == 0
    status, metrics = daemon.get("/metrics")
    assert status == 200 and 'badged_rechecks_total{result="awarded"} 1.0' in metrics
    assert "badged_rechecks_pending 0.0" in metrics
    assert daemon.terminate() == 0
    assert daemon.errors() == []


def test_status_shows_deferred_checks_and_badged_recheck_finishes_them(
        dsn: str, conn: psycopg.Connection[Any], sessions: tuple[Session, Session], write_badges: Any, cli: Any
        ) -> None:
    path = str(write_badges(SEED_BADGES))
    apply(dsn, SEED_BADGES)
    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT %s FROM generate_series(1, 4)", (ann,))
    holder, _ = sessions
    holder.run(sql.SQL("SELECT {}").format(user_lock(sql.Literal(str(ann)), SETTINGS)).as_string(holder.conn))
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (ann,))
    code, out, _ = cli("status", "--badges", path, "--dsn", dsn)
    assert code == 0 and "1 deferred checks waiting for badged run, oldest 0 s (`badged recheck` finishes them now)" \
        in out
    code, out, _ = cli("recheck", "--badges", path, "--dsn", dsn)
    assert (code, out.strip()) == (0, "rechecked 0: 0 awarded (0 awards), 0 not earned, 0 dropped (badge gone), "
                                      "0 failed; 1 left: a transaction is still checking the same user; run again, "
                                      "or let badged run finish them")
    holder.conn.commit()
    code, out, _ = cli("recheck", "--badges", path, "--dsn", dsn)
    assert (code, out.strip()) == (0, "rechecked 1: 1 awarded (1 awards), 0 not earned, 0 dropped (badge gone), "
                                      "0 failed; none left")
    code, out, _ = cli("status", "--badges", path, "--dsn", dsn, "--output", "json")
    assert code == 0 and json.loads(out)["rechecks_pending"] == 0


def test_the_drain_drops_checks_of_removed_badges_and_skips_failing_conditions(
        dsn: str, conn: psycopg.Connection[Any]) -> None:
    items = [*SEED_BADGES, badge("broken", "count(id) / 0 >= 1 from dummy_sketch where user_id = NEW.user_id"),
             badge("first", "count(id) >= 1 from dummy_sketch where user_id = NEW.user_id")]
    apply(dsn, items)
    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (ann,))
    conn.execute("DELETE FROM badged.award")
    for codes in (["gone"], ["broken"], ["broken", "first", "gone"]):  # as a trigger would have deferred them
        conn.execute("INSERT INTO badged.recheck (trigger_table, event, user_id, badges, new_row) "
                     "SELECT 'public.dummy_sketch', 'insert', user_id::text, %s, s::text FROM dummy_sketch s",
                     (codes,))
    with connect(dsn, SETTINGS) as drainer:
        drained = drain(drainer, badges_from(items), SETTINGS)
    assert {result: n for result, n in drained.counts.items() if n} == {
        Result.DROPPED: 1, Result.FAILED: 1, Result.AWARDED: 1}
    assert awards(conn) == {("first", str(ann))}
    assert rechecks(conn) == 0


def test_a_serializable_update_defers_only_the_badges_whose_columns_changed(
        dsn: str, conn: psycopg.Connection[Any]) -> None:
    """What is deferred is what a READ COMMITTED check would have checked: update_of keeps its column filter."""
    items = [badge("viewed", "hit_views > 10", event="update"), badge("titled", "title <> ''", event="update")]
    apply(dsn, items)
    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id, title) VALUES (%s, 'named')", (ann,))  # titled's condition holds
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        conn.execute("UPDATE dummy_sketch SET hit_views = 11")  # hit_views changed, title did not
    assert conn.execute("SELECT badges FROM badged.recheck").fetchall() == [(["viewed"],)]
    drain_all(dsn, items)
    assert awards(conn) == {("viewed", str(ann))}, "titled: its column did not change, as in READ COMMITTED"


def test_backfill_blocked_by_a_held_key_says_so_and_can_be_run_again(
        dsn: str, conn: psycopg.Connection[Any], sessions: tuple[Session, Session]) -> None:
    from badged.backfill import run_backfill
    from badged.catalog import resolve_tables
    from badged.errors import LockTimeout

    (ann,) = add_users(conn, 1)
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT %s FROM generate_series(1, 5)", (ann,))
    apply(dsn, SEED_BADGES)
    holder, _ = sessions
    holder.run(sql.SQL("SELECT {}").format(user_lock(sql.Literal(str(ann)), SETTINGS)).as_string(holder.conn))
    impatient = Settings(lock_timeout_ms=200)
    (collector,) = [b for b in badges_from(SEED_BADGES) if b.code == "collector"]
    with connect(dsn, impatient) as reader:
        table = resolve_tables(reader, [collector.table])[str(collector.table)]
    assert table is not None
    with pytest.raises(LockTimeout, match="held its key longer than lock_timeout; run backfill again later"):
        run_backfill(lambda: connect(dsn, impatient), collector, table, impatient)
    holder.conn.commit()
    assert run_backfill(lambda: connect(dsn, impatient), collector, table, impatient).awarded == 1
