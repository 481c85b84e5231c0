"""``manage.py badged_migrate_from django-pg-badges [--dry-run]``: ``badged migrate-from`` for a Django project.

On Django's own connection (see ``conf.django_connection``), in one transaction: badged's reconcile, the
original's triggers and functions dropped, its awards imported as history (``badged.migrate_from``).
``--dry-run`` prints what would be done. Then remove ``"badges"`` from ``INSTALLED_APPS``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from badged.contrib.django.conf import add_database_arguments, command_badges, command_errors, django_connection
from badged.migrate_from import migrate_from_pg_badges
from badged.output import migration_text
from badged.pg_badges import SOURCE


class Command(BaseCommand):  # type: ignore[misc, unused-ignore]
    help = (f"Replace {SOURCE} with badged in one transaction: import its awards as history (no event), drop its "
            "triggers and functions, create badged's.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", choices=[SOURCE], help="what to migrate from")
        parser.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
        add_database_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        conf, badges = command_badges(options)
        with command_errors(), django_connection(options["database"] or conf.database, conf.badged) as conn:
            migration = migrate_from_pg_badges(conn, badges, conf.badged, apply=not options["dry_run"])
        self.stdout.write(migration_text(migration, badges=len(badges)))
