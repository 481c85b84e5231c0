"""``badged migrate-from django-pg-badges``: the parser and handler of the command that moves a database off the
original package (``badged.migrate_from``)."""

from __future__ import annotations

import argparse
import sys

from badged.cli_args import EXIT_OK, Parser, badges_of, settings_of
from badged.db import connect, resolve_dsn
from badged.output import migration_json, migration_text
from badged.pg_badges import SOURCE


def add_migrate_command(commands: argparse._SubParsersAction[Parser], spec: Parser, database: Parser,
                        logs: Parser) -> None:
    """Add ``migrate-from`` to *commands*, with the shared *spec*, *database* and *logs* options."""
    migrate = commands.add_parser(
        "migrate-from", parents=[spec, database, logs],
        help=f"replace {SOURCE} with badged in one transaction: import its awards as history, drop its triggers "
             "and functions, reconcile badged's (README, Coming from django-pg-badges)")
    migrate.add_argument("source", choices=[SOURCE], help="what to migrate from")
    migrate.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    migrate.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from badged.migrate_from import migrate_from_pg_badges

    settings = settings_of(args)
    badges = badges_of(args, settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        migration = migrate_from_pg_badges(conn, badges, settings, apply=not args.dry_run)
    present = migration_json if args.output == "json" else migration_text
    sys.stdout.write(present(migration, badges=len(badges)) + "\n")
    return EXIT_OK
