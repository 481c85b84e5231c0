"""``badged migrate-from django-pg-badges``: move a database off the original package, in one transaction.

Under badged's advisory lock, in this order: badged's reconcile (its tables, functions and triggers; trigger
DDL last), then the original's triggers and functions dropped (``pg_badges.drop_statements``: only what its
template created), then its awards imported as history (``pg_badges.import_statement``). Dropping the
original's triggers takes their tables' locks, so the import's snapshot, taken after, sees every award the
original's triggers wrote: none is lost to a concurrent write, and none is imported twice (``ON CONFLICT``
and the import record). A dry run reads the same and changes nothing (badged's plan is tried in a savepoint
that is rolled back, as ``badged plan`` does). A second run finds nothing to do.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from badged.catalog import read_original
from badged.db_errors import translate
from badged.logs import get_logger
from badged.pg_badges import Migration, Original, create_imported_table, drop_statements, import_statement
from badged.reconcile import lock_schema, reconcile, set_local_timeouts
from badged.settings import Settings
from badged.spec import Badge

log = get_logger("badged.migrate_from")


def migrate_from_pg_badges(conn: psycopg.Connection[Any], badges: tuple[Badge, ...], settings: Settings, *,
                           apply: bool) -> Migration:
    """Find what django-pg-badges left and (with *apply*) replace it with badged, in one transaction.

    Runs inside a transaction the caller has open (Django's ``atomic``, a test's) as a savepoint.
    """
    started = time.monotonic()
    codes = [badge.code for badge in badges]
    try:
        with conn.transaction():
            set_local_timeouts(conn, settings)
            lock_schema(conn, settings)
            if not apply:
                original = read_original(conn, settings, codes)
                plan = reconcile(conn, badges, settings, apply=False).plan
                return Migration(original, plan, applied=False, seconds=time.monotonic() - started)
            plan = reconcile(conn, badges, settings, apply=True).plan
            original = read_original(conn, settings, codes)
            imported = _replace_original(conn, settings, original) if original.found else 0
    except psycopg.Error as exc:
        raise translate(exc, "migrate from django-pg-badges", rolled_back=apply) from None
    migration = Migration(original, plan, applied=True, imported=imported, seconds=time.monotonic() - started)
    log.info("migrate_from.done", imported=imported, triggers_dropped=len(original.triggers),
             functions_dropped=len(original.functions), badged_changes=len(plan.steps),
             seconds=round(migration.seconds, 3))
    return migration


def _replace_original(conn: psycopg.Connection[Any], settings: Settings, original: Original) -> int:
    """Drop the original's triggers and functions, then import its awards; return how many were imported.

    The import runs even when the count read before said there was nothing: an award the original's trigger
    wrote since, before the drop took its table's lock, is imported too.
    """
    for statement in drop_statements(original):
        conn.execute(statement)
    if original.table is None:
        return 0
    conn.execute(create_imported_table(settings))
    return conn.execute(import_statement(original.table, settings)).rowcount
