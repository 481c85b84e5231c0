"""``manage.py create_badge_triggers``: make the database's badge triggers match badge.json.

badged's reconcile, in one transaction on the database of ``BADGED_DATABASE`` (``--database``), on Django's
own connection (inside the caller's ``atomic()`` or ``TestCase``, as a savepoint): only what differs is
created, replaced or dropped; a second run changes nothing. ``--dry-run`` prints the plan (the same text as
``badged plan``) and changes nothing; ``--check`` does the same and exits 1 when changes are pending (a CI
gate, like ``makemigrations --check``). ``call_command("create_badge_triggers", badges="badge.json")`` and
the original's ``file=`` both name badge.json.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from badged.contrib.django.conf import add_database_arguments, command_badges, command_errors, django_connection
from badged.output import outcome_text, plan_text
from badged.reconcile import reconcile


class Command(BaseCommand):  # type: ignore[misc, unused-ignore]
    help = "Create, replace or drop the badge triggers so the database matches badge.json (settings.BADGED_BADGES)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the plan (with its SQL), change nothing")
        parser.add_argument("--check", action="store_true",
                            help="like --dry-run, and exit 1 when the database does not match badge.json")
        add_database_arguments(parser)
        parser.add_argument("--allow-empty", action="store_true", default=None,
                            help="accept an empty badge list, which drops every badge (settings.BADGED_ALLOW_EMPTY)")

    def handle(self, *args: Any, **options: Any) -> None:
        conf, badges = command_badges(options, allow_empty=options["allow_empty"])
        dry_run = options["dry_run"] or options["check"]
        with command_errors(), django_connection(options["database"] or conf.database, conf.badged) as conn:
            outcome = reconcile(conn, badges, conf.badged, apply=not dry_run)
        if dry_run:
            self.stdout.write(plan_text(outcome.plan, badges=len(badges)))
            if options["check"] and not outcome.plan.in_sync:
                sys.exit(1)
        else:
            self.stdout.write(outcome_text(outcome))

