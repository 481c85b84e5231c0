"""Testing a Django project that uses badged: its triggers in the test database, its awards flushed.

Django creates test databases with ``migrate``, which knows nothing of badged's triggers, and flushes them
between ``TransactionTestCase`` tests without badged's tables (they are unmanaged). So:

- ``BadgedTestMixin``, first among a test case's bases (``class T(BadgedTestMixin, TestCase)``): reconciles
  badge.json into each test database once (before ``TestCase`` opens its transaction, so it stays), and
  after each ``TransactionTestCase`` test empties badged's award tables as Django's flush does the app's;
- with pytest-django, the session fixture ``badged_triggers`` (import it into ``conftest.py``) and
  ``flush_awards()`` for transactional tests;
- or ``BADGED_RECONCILE_ON_MIGRATE = True``: ``migrate`` (test databases' included) reconciles at its end.

``create_badge_triggers`` runs on Django's own connection, so inside a test's transaction it sees the test's
rows and waits on none of its locks.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.db import connections
from psycopg import sql

from badged.contrib.django.conf import get_settings
from badged.own_schema import AWARD_TABLE, GROUP_TABLE, PARKED_TABLE, RECHECK_TABLE
from badged.pg_badges import IMPORTED_TABLE

#: what a flush empties: everything that tells of awards (never the badge registry, which badge.json makes)
FLUSHED_TABLES = (AWARD_TABLE, RECHECK_TABLE, GROUP_TABLE, PARKED_TABLE, IMPORTED_TABLE)

#: (alias, database name) of the test databases the triggers were installed in, in this process
_installed: set[tuple[str, str]] = set()


def install_badge_triggers(using: str | None = None) -> None:
    """Reconcile badge.json into the database *using* (default ``BADGED_DATABASE``), once per database."""
    alias = using or get_settings().database
    key = (alias, str(connections[alias].settings_dict["NAME"]))
    if key in _installed:
        return
    call_command("create_badge_triggers", database=alias, verbosity=0)
    _installed.add(key)


def flush_awards(using: str | None = None) -> None:
    """Empty badged's award tables in the database *using* (default ``BADGED_DATABASE``)."""
    alias = using or get_settings().database
    schema = get_settings().badged.schema
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_catalog.array_agg(t) FROM pg_catalog.unnest(%s::text[]) t "
                       "WHERE pg_catalog.to_regclass(pg_catalog.quote_ident(%s) || '.' || t) IS NOT NULL",
                       [list(FLUSHED_TABLES), schema])
        present = (cursor.fetchone() or [None])[0] or []
        if present:
            names = sql.SQL(", ").join(sql.Identifier(schema, table) for table in present)
            cursor.execute(sql.SQL("TRUNCATE {}").format(names).as_string(None))


class BadgedTestMixin:
    """Mix into ``TestCase`` or ``TransactionTestCase``, first: triggers installed, awards flushed."""

    databases: Any

    @classmethod
    def setUpClass(cls) -> None:
        alias = get_settings().database
        if cls.databases == "__all__" or alias in cls.databases:
            install_badge_triggers(alias)
        super().setUpClass()  # type: ignore[misc]

    def _fixture_teardown(self) -> None:
        super()._fixture_teardown()  # type: ignore[misc]
        from django.test import TestCase

        alias = get_settings().database
        uses_it = self.databases == "__all__" or alias in self.databases
        if uses_it and not isinstance(self, TestCase):  # a TestCase rolls its awards back with the rest
            flush_awards(alias)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest-django users have pytest
    pass
else:

    @pytest.fixture(scope="session")
    def badged_triggers(django_db_setup: Any, django_db_blocker: Any) -> None:
        """pytest-django: badge.json reconciled into the test database, once per session."""
        with django_db_blocker.unblock():
            install_badge_triggers()
