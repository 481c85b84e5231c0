"""``manage.py create_badge_triggers``: make the database's badge triggers match ``settings.BADGES_FILE``.

badged's reconcile, in one transaction on the database of ``BADGED_DATABASE`` (``--database``):
only what differs is created, replaced or dropped; a second run changes nothing. ``--dry-run``
prints the plan (the same text as ``badged plan``) and changes nothing; ``--check`` does the same
and exits 1 when changes are pending (a CI gate, like ``makemigrations --check``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from badged.contrib.django.conf import command_errors, configure_logs, database_dsn, get_settings
from badged.db import connect
from badged.output import outcome_text, plan_text
from badged.reconcile import reconcile
from badged.spec import load_badges


class Command(BaseCommand):  # type: ignore[misc, unused-ignore]
    help = "Create, replace or drop the badge triggers so the database matches settings.BADGES_FILE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the plan (with its SQL), change nothing")
        parser.add_argument("--check", action="store_true",
                            help="like --dry-run, and exit 1 when the database does not match badge.json")
        parser.add_argument("--database", default=None,
                            help="alias in settings.DATABASES (default: settings.BADGED_DATABASE, else 'default')")
        parser.add_argument("--badges", type=Path, default=None, metavar="PATH",
                            help="badge.json to read instead of settings.BADGES_FILE")
        parser.add_argument("--allow-empty", action="store_true", default=None,
                            help="accept an empty badge list, which drops every badge (settings.BADGED_ALLOW_EMPTY)")

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logs(options["verbosity"])
        conf = get_settings()
        path: Path | None = options["badges"] or conf.badges_file
        if path is None:
            raise CommandError("settings.BADGES_FILE is not set: point it at your badge.json (or pass --badges)")
        allow_empty = conf.allow_empty if options["allow_empty"] is None else True
        dry_run = options["dry_run"] or options["check"]
        with command_errors():
            badges = load_badges(path, prefix=conf.badged.prefix, allow_empty=allow_empty, schema=conf.badged.schema)
        dsn = database_dsn(options["database"] or conf.database)
        with command_errors(dsn), connect(dsn, conf.badged) as conn:
            outcome = reconcile(conn, badges, conf.badged, apply=not dry_run)
        if dry_run:
            self.stdout.write(plan_text(outcome.plan, badges=len(badges)))
            if options["check"] and not outcome.plan.in_sync:
                sys.exit(1)
        else:
            self.stdout.write(outcome_text(outcome))
