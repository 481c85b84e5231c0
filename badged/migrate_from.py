"""``badged migrate-from django-pg-badges``: move a database off the original package, in one transaction.

Under badged's advisory lock, READ COMMITTED, in this order: badged's reconcile (its tables, functions and
triggers; trigger DDL last); every write to ``badges_badge`` and to the tables the original's triggers watch
held until commit (``SHARE ROW EXCLUSIVE``: readers go on); its awards imported as history
(``pg_badges.import_statement``), by a statement whose snapshot is taken after those locks, so it sees every
award the original wrote: none is lost to a concurrent write, none imported twice (``ON CONFLICT`` and the
import record); then the original's triggers and functions dropped (``pg_badges.drop_statements``: only what
its template created, in the schema of its table). A dry run reads the same and changes nothing (badged's
plan is tried in a savepoint that is rolled back, as ``badged plan`` does). A second run finds nothing to do.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import pq

from badged.backoff import Backoff
from badged.catalog import read_original
from badged.db_errors import translate
from badged.errors import ConfigError, Conflict, LockTimeout
from badged.logs import get_logger
from badged.pg_badges import (
    ORIGINAL_TABLE,
    SOURCE,
    Migration,
    Original,
    create_imported_table,
    drop_statements,
    import_statement,
    lock_statements,
    register_unknown_codes,
)
from badged.reconcile import lock_schema, reconcile, set_local_timeouts
from badged.settings import Settings
from badged.spec import Badge

log = get_logger("badged.migrate_from")


#: how often a migration that lost a deadlock or waited past lock_timeout is tried again (it rolled back whole)
ATTEMPTS = 5


def migrate_from_pg_badges(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings, *,
                           apply: bool) -> Migration:
    """Find what django-pg-badges left and (with *apply*) replace it with badged, in one transaction.

    Runs inside a transaction the caller has open (Django's ``atomic``, a test's) as a savepoint. In a
    transaction of its own, a deadlock with the application's writers or a lock timeout (temporary: it rolled
    back whole) is tried again, up to ``ATTEMPTS`` times with backoff.
    """
    ours = conn.info.transaction_status == pq.TransactionStatus.IDLE  # else a savepoint of the caller's
    backoff = Backoff(base=settings.lock_timeout_ms / 1000)
    attempt = 1
    while True:
        try:
            return _migrate(conn, badges, settings, apply=apply, ours=ours)
        except (Conflict, LockTimeout) as exc:
            if not ours or attempt == ATTEMPTS:
                raise
            delay = backoff.next_delay()
            log.warning("migrate_from.retry", error=str(exc), attempt=attempt, retry_in=round(delay, 2))
            time.sleep(delay)
            attempt += 1


def _migrate(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings, *, apply: bool,
             ours: bool) -> Migration:
    started = time.monotonic()
    codes = [badge.code for badge in badges]
    try:
        with conn.transaction():
            _read_committed(conn, ours)
            set_local_timeouts(conn, settings)
            lock_schema(conn, settings)
            if not apply:
                original = _found(read_original(conn, settings, codes))
                plan = reconcile(conn, badges, settings, apply=False).plan
                return Migration(original, plan, applied=False, seconds=time.monotonic() - started)
            plan = reconcile(conn, badges, settings, apply=True).plan
            original = _found(read_original(conn, settings, codes))
            imported = _replace_original(conn, settings, original) if original.found else 0
    except psycopg.Error as exc:
        raise translate(exc, "migrate from django-pg-badges", rolled_back=apply) from None
    migration = Migration(original, plan, applied=True, imported=imported, seconds=time.monotonic() - started)
    log.info("migrate_from.done", imported=imported, triggers_dropped=len(original.triggers),
             functions_dropped=len(original.functions), badged_changes=len(plan.steps),
             seconds=round(migration.seconds, 3))
    return migration


def _read_committed(conn: psycopg.Connection[Any], ours: bool) -> None:
    """The import must see what committed while it waited for its locks: READ COMMITTED, never a snapshot
    taken before them (REPEATABLE READ would miss those awards, and say nothing)."""
    if ours:
        conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return
    row = conn.execute("SELECT pg_catalog.current_setting('transaction_isolation')").fetchone()
    if row is None or row[0] != "read committed":
        raise ConfigError(f"the migration from {SOURCE} needs a READ COMMITTED transaction (this one is "
                          f"{row[0] if row else 'unknown'}): awards committed while it waits for its locks "
                          "would be missed; run it outside the transaction, or in a READ COMMITTED one")


def _found(original: Original) -> Original:
    """*original*, unless its functions are there but its award table is not where this connection looks."""
    if original.table is None and original.elsewhere:
        schemas = sorted({function.schema for function in original.elsewhere})
        raise ConfigError(
            f"{SOURCE}'s functions are in schema {', '.join(schemas)}, but no {ORIGINAL_TABLE} table is on this "
            "connection's search_path, so their awards cannot be imported and nothing is dropped: connect with "
            "the search_path of the Django app whose awards they are (libpq: options='-c search_path=SCHEMA')")
    return original


def _replace_original(conn: psycopg.Connection[Any], settings: Settings, original: Original) -> int:
    """Hold the writers, import the original's awards, drop its triggers and functions; return the imported.

    The import runs even when the count read before said there was nothing: an award the original's trigger
    wrote since, before the locks were granted, is imported too.
    """
    for lock in lock_statements(original):
        conn.execute(lock)
    imported = 0
    if original.table is not None:
        conn.execute(create_imported_table(settings))
        conn.execute(register_unknown_codes(original.table, settings))
        imported = conn.execute(import_statement(original.table, settings)).rowcount
    for statement in drop_statements(original):
        conn.execute(statement)
    return imported
