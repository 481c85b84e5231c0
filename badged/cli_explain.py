"""``badged explain --user U``: the parser and handler of the command that says why a user holds a badge or not
(``badged.explain``)."""

from __future__ import annotations

import argparse
import sys

from badged.cli_args import EXIT_OK, Parser, badges_of, settings_of
from badged.db import connect, resolve_dsn


def add_explain_command(commands: argparse._SubParsersAction[Parser], spec: Parser, database: Parser,
                        logs: Parser) -> None:
    """Add ``explain`` to *commands*, with the shared *spec*, *database* and *logs* options."""
    explain = commands.add_parser(
        "explain", parents=[spec, database, logs],
        help="why a user holds a badge or not: each condition evaluated for that user, term by term (read-only)")
    explain.add_argument("--user", required=True, metavar="USER_ID", help="the user's id, as awards store it")
    explain.add_argument("--badge", action="append", default=None, metavar="CODE",
                         help="only this badge (repeatable; default: every badge)")
    explain.set_defaults(handler=_explain)


def _explain(args: argparse.Namespace) -> int:
    from badged.explain import explain_user
    from badged.explain_terms import explanation_json, explanation_text

    settings = settings_of(args)
    badges = badges_of(args, settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        explanations = explain_user(conn, badges, settings, args.user, only=args.badge or ())
    present = explanation_json if args.output == "json" else explanation_text
    sys.stdout.write(present(explanations) + "\n")
    return EXIT_OK
