"""``manage.py check`` for a project coming from django-pg-badges (README, Coming from django-pg-badges).

- ``badged.W002``: the original app (``badges``) is installed beside badged. Its ``create_badge_triggers``
  drops every trigger whose function matches ``LIKE 'badge_%'``, which matches ``badged_…`` too.
- ``badged.W003``: ``manage.py create_badge_triggers`` runs another app's command (the app listed first in
  ``INSTALLED_APPS`` owns a command name).
- ``badged.W004`` (a database check: ``manage.py check --database default``, and ``migrate``): the
  original's functions are still in the database.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import psycopg
from django.apps import apps
from django.core import checks
from django.db import DatabaseError

from badged.logs import get_logger
from badged.pg_badges import SOURCE

log = get_logger("badged.contrib.django")

#: the original's Django app (``INSTALLED_APPS`` entry and label)
ORIGINAL_APP = "badges"
#: badged's app, as ``get_commands()`` names the owner of a command
BADGED_APP = "badged.contrib.django"
COMMAND = "create_badge_triggers"
_MIGRATE = f"run `manage.py badged_migrate_from {SOURCE}` (--dry-run first)"


def original_installed() -> bool:
    """Whether ``INSTALLED_APPS`` holds the original (an app ``badges`` with its ``create_badge_triggers``)."""
    if not apps.is_installed(ORIGINAL_APP):
        return False
    try:  # an app of the project's own named "badges" may have no management package: find_spec raises
        return importlib.util.find_spec(f"{ORIGINAL_APP}.management.commands.{COMMAND}") is not None
    except ModuleNotFoundError:
        return False


def check_original_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not original_installed():
        return []
    return [checks.Warning(
        f"{SOURCE} (app '{ORIGINAL_APP}') is installed beside badged: both award every badge, in two tables, "
        f"and its {COMMAND} drops badged's triggers (its LIKE 'badge_%' matches 'badged_...')",
        hint=f"{_MIGRATE}, then remove '{ORIGINAL_APP}' from INSTALLED_APPS",
        id="badged.W002",
    )]


def check_command_owner(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.core.management import get_commands

    owner = get_commands().get(COMMAND)
    if owner in (None, BADGED_APP):
        return []
    return [checks.Warning(
        f"manage.py {COMMAND} runs the command of app '{owner}', not badged's: the app listed first in "
        "INSTALLED_APPS owns a command name",
        hint=f"remove '{owner}' from INSTALLED_APPS ({_MIGRATE} first), or list '{BADGED_APP}' before it",
        id="badged.W003",
    )]


def check_original_functions(app_configs: Any = None, databases: Any = None,
                             **kwargs: Any) -> list[checks.CheckMessage]:
    """The original's functions still in a database Django checks (only when asked: ``--database``)."""
    from django.db import connections

    from badged.catalog import read_original_functions
    from badged.contrib.django.conf import get_settings

    settings = get_settings().badged
    found: list[checks.CheckMessage] = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        try:
            connection.ensure_connection()
            raw = connection.connection
            functions = read_original_functions(raw, settings) if isinstance(raw, psycopg.Connection) else ()
        except (DatabaseError, psycopg.Error) as exc:  # an unreachable database is for migrate to report
            log.debug("check.skipped", database=alias, error=str(exc))
            continue
        if functions:
            names = ", ".join(function.display for function in functions[:5]) + (", ..." if len(functions) > 5
                                                                                  else "")
            found.append(checks.Warning(
                f"database {alias!r} still has {len(functions)} trigger functions of {SOURCE}: {names}",
                hint=f"{_MIGRATE}: it imports their awards and drops them, with their triggers",
                id="badged.W004",
            ))
    return found
