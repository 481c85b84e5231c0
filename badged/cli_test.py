"""``badged test [PATH ...]``: the parser and handler of the command that runs badge.json's test files
(``badged.badge_tests``, ``badged.test_runner``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from badged.cli_args import EXIT_ERROR, EXIT_OK, Parser, settings_of


def add_test_command(commands: argparse._SubParsersAction[Parser], spec: Parser, logs: Parser) -> None:
    """Add ``test`` to *commands*, with the shared *spec* and *logs* options."""
    test = commands.add_parser(
        "test", parents=[spec, logs],
        help="run badge.json's test files (*.test.yaml) on a throw-away PostgreSQL: rows written, awards expected")
    test.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="test files, or folders holding *.test.yaml|yml|json (default: badge.json's folder)")
    test.add_argument("--dsn", dest="test_dsn", default=None,
                      help="a server where badged may create and drop a scratch database per file (default: an "
                           "embedded PostgreSQL, badged[demo]); never BADGED_DSN or DATABASE_URL")
    test.add_argument("--schema-from", default=None, metavar="DSN",
                      help="the schema of this database (pg_dump --schema-only) instead of each file's 'schema'")
    test.add_argument("--output", dest="test_output", choices=("text", "json"), default="text")
    test.add_argument("--junit-xml", type=Path, default=None, metavar="PATH",
                      help="also write the results as JUnit XML here, for CI systems")
    test.set_defaults(handler=_test)


def _test(args: argparse.Namespace) -> int:
    from badged.badge_tests import find_test_files
    from badged.test_report import report_json, report_junit, report_text
    from badged.test_runner import run_badge_tests

    settings = settings_of(args)
    badges = Path(args.badges)
    files = find_test_files(args.paths or [badges.parent])
    if not files:
        sys.stderr.write(f"badged: error: no test files (*.test.yaml, *.test.yml, *.test.json) in "
                         f"{', '.join(map(str, args.paths or [badges.parent]))}\n")
        return EXIT_ERROR
    report = run_badge_tests(files, badges=badges, settings=settings, dsn=args.test_dsn, schema_from=args.schema_from)
    sys.stdout.write((report_json(report) if args.test_output == "json" else report_text(report)) + "\n")
    if args.junit_xml is not None:
        try:
            args.junit_xml.write_text(report_junit(report) + "\n")
        except OSError as exc:
            sys.stderr.write(f"badged: error: cannot write --junit-xml {args.junit_xml}: {exc.strerror}\n")
            return EXIT_ERROR
    return EXIT_OK if report.passed else EXIT_ERROR
