"""``badged events parked|replay|secret``: the parser and handlers of the events command group.

Parked events are those a sink refused for good (a 4xx, a redirect); ``replay`` asks the running
sinks (``badged run``) to send them again; ``secret`` prints a new webhook signing secret.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from badged.cli_args import EXIT_OK, Parser, setting, settings_of
from badged.db import connect, resolve_dsn
from badged.errors import ConfigError
from badged.output import parked_json, parked_text, replay_text

if TYPE_CHECKING:
    from badged.parking import ParkingStatements


def add_events_commands(commands: argparse._SubParsersAction[Parser], database: Parser, logs: Parser) -> None:
    """Add ``events`` and its actions to *commands*, with the shared *database* and *logs* options."""
    events = commands.add_parser("events", help="parked events (refused by a sink for good), and webhook secrets")
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION", parser_class=Parser)
    parked = actions.add_parser("parked", parents=[database, logs],
                                help="list the events a sink refused for good (a 4xx, a redirect), with its answer")
    parked.add_argument("--group", **setting("group"), metavar="NAME", help="only this sink's group")
    parked.add_argument("--limit", type=int, default=100, metavar="N", help="at most N events (default 100)")
    parked.set_defaults(handler=_events_parked)
    replay = actions.add_parser("replay", parents=[database, logs],
                                help="ask the running sinks (badged run) to send parked events again")
    replay.add_argument("--group", **setting("group"), metavar="NAME", help="only this sink's group")
    replay.add_argument("--award", type=int, action="append", metavar="ID", help="only this award (repeatable)")
    replay.add_argument("--all", action="store_true", help="every parked event (of --group, if given)")
    replay.set_defaults(handler=_events_replay)
    secret = actions.add_parser("secret", parents=[logs], help="print a new webhook signing secret (whsec_...)")
    secret.set_defaults(handler=_events_secret)


def _events_parked(args: argparse.Namespace) -> int:
    with _parking(args) as (conn, statements):
        parked = statements.read_listing(conn.execute(*statements.listing(args.group, args.limit)).fetchall())
    _show(parked_json(parked) if args.output == "json" else parked_text(parked, args.group))
    return EXIT_OK


def _events_replay(args: argparse.Namespace) -> int:
    if not args.all and not args.award:
        raise ConfigError("say which parked events to send again: --award ID (repeatable) or --all")
    with _parking(args) as (conn, statements):
        marked = conn.execute(*statements.request_replay(args.group, None if args.all else args.award)).fetchall()
    _show(replay_text(len(marked), sorted({str(row[0]) for row in marked})))
    return EXIT_OK


def _show(text: str) -> None:
    """The command's result on stdout (logs go to stderr)."""
    sys.stdout.write(text + "\n")


@contextlib.contextmanager
def _parking(args: argparse.Namespace) -> Iterator[tuple[psycopg.Connection[Any], ParkingStatements]]:
    """A connection and the parked_event statements; a clear error when the table is not there yet."""
    from badged.parking import ParkingStatements

    settings = settings_of(args)
    statements = ParkingStatements(settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        row = conn.execute(*statements.table_exists()).fetchone()
        if not row or not row[0]:
            raise ConfigError(f"{statements.table_name} is missing: run `badged reconcile --once` (or `badged run`) "
                              "against this database first")
        yield conn, statements


def _events_secret(args: argparse.Namespace) -> int:
    from badged.sinks.webhook import new_secret

    _show(new_secret())
    return EXIT_OK
