"""The ``badged`` command: parses arguments, calls the library, prints results.

Exit codes: 0 success, 1 any error (bad input, database unreachable, refused DDL),
and for ``plan --detailed-exitcode`` 2 when changes are pending. Errors go to
stderr as one sentence each, never with a traceback or a password.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from badged.catalog import own_table_exists
from badged.cli_args import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, Parser, add_setting, badges_of, setting, settings_of
from badged.cli_args import SETTING_OF_FLAG as _SETTING_OF_FLAG
from badged.cli_args import settings_of as _settings
from badged.cli_events import add_events_commands
from badged.cli_explain import add_explain_command
from badged.cli_listen import add_listen_command
from badged.cli_migrate import add_migrate_command
from badged.cli_test import add_test_command
from badged.db import connect, resolve_dsn, scrub
from badged.db_errors import message_of
from badged.errors import BadgedError, ConfigError, SpecError
from badged.log_output import LEVELS, configure_logging
from badged.output import outcome_json, outcome_text, plan_json, plan_text
from badged.own_schema import RECHECK_TABLE
from badged.reconcile import reconcile
from badged.settings import OptionsError, load_options
from badged.version import __version__

if TYPE_CHECKING:
    from badged.backfill import Progress
    from badged.sink_tasks import SinkSpec

#: the names tests use (``cli._settings``, ``cli._SETTING_OF_FLAG``), now defined in ``cli_args``
__all__ = ["EXIT_CHANGES", "EXIT_ERROR", "EXIT_OK", "_SETTING_OF_FLAG", "_settings", "build_parser", "main", "run"]


def _spec_options() -> Parser:
    common = Parser(add_help=False)
    group = common.add_argument_group("badge.json")
    add_setting(group, "badges", "badge.json to read", metavar="PATH", default="./badge.json")
    add_setting(group, "prefix", "prefix of every trigger and function badged manages", default="badged_")
    group.add_argument("--allow-empty", action="store_const", const=True, dest="allow_empty", default=None,
                       help="accept an empty badge list, which drops every badge (env BADGED_ALLOW_EMPTY: "
                            "true/false, 1/0, yes/no, on/off)")
    group.add_argument("--allow-volatile", action="append", dest="allow_volatile", default=None,
                       metavar="[SCHEMA.]FUNCTION",
                       help="let conditions call this VOLATILE function, which only reads (repeatable; env "
                            "BADGED_ALLOW_VOLATILE, comma-separated; README, Security)")
    return common


def _logging_options() -> Parser:
    common = Parser(add_help=False)
    logging = common.add_argument_group("logging")
    add_setting(logging, "log_level", "", metavar="{debug,info,warning,error}", default="info")
    add_setting(logging, "log_format", "auto: console on a terminal, else JSON", metavar="{auto,json,console}",
                default="auto")
    return common


_DURATION_HELP = "a duration: 90 (seconds), 1.5, 500ms, 90s, 5m or 1h"


def _database_options() -> Parser:
    common = Parser(add_help=False)
    group = common.add_argument_group("database")
    group.add_argument("--dsn", **setting("dsn"),
                       help="PostgreSQL connection string (env BADGED_DSN, else DATABASE_URL, else libpq's PG* "
                            "variables)")
    add_setting(group, "schema", "schema for badged's tables and functions", default="badged")
    add_setting(group, "channel", "NOTIFY channel for new awards", default="badge_earned")
    add_setting(group, "lock_timeout", f"give up on a busy table after this long, {_DURATION_HELP}",
                metavar="DURATION", default="3s")
    add_setting(group, "statement_timeout", "on every connection badged opens; also how long a reconcile waits "
                "for another one", metavar="DURATION", default="60s")
    add_setting(group, "output", "", metavar="{text,json}", default="text")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="badged", description="Award badges inside PostgreSQL, with triggers reconciled "
                                                "from badge.json.")
    parser.add_argument("--version", action="version", version=f"badged {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    spec, database, logs = _spec_options(), _database_options(), _logging_options()

    validate = commands.add_parser("validate", parents=[spec, logs], help="check badge.json alone (no database)")
    validate.set_defaults(handler=_validate)

    plan = commands.add_parser("plan", parents=[spec, database, logs], help="show what reconcile would change")
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help="exit 0 when in sync, 2 when changes are pending, 1 on error")
    plan.set_defaults(handler=_plan)

    once = commands.add_parser("reconcile", parents=[spec, database, logs],
                               help="apply the plan in one transaction and exit")
    once.add_argument("--once", action="store_true", default=True,
                      help="one pass, then exit (the default; `badged run` keeps reconciling)")
    once.set_defaults(handler=_reconcile)

    run = commands.add_parser("run", parents=[spec, database, logs],
                              help="keep reconciling: watch badge.json (file or ConfigMap), resync, serve probes")
    source = run.add_argument_group("daemon")
    add_setting(source, "configmap", "read badge.json from this ConfigMap through the Kubernetes API instead of "
                "--badges (key default badge.json; needs badged[k8s])", metavar="NAMESPACE/NAME[:KEY]")
    add_setting(source, "resync", "reconcile this often even without a change, repairing drift",
                metavar="DURATION", default="60s")
    add_setting(source, "recheck_interval", "finish the badge checks triggers deferred (a concurrent check of the "
                "same user) this often", metavar="DURATION", default="1s")
    add_setting(source, "http", "serve /healthz, /readyz and /metrics here; empty disables", metavar="ADDR",
                default=":8080")
    hook = run.add_argument_group("event sinks (README, Events)")
    add_setting(hook, "webhook", "POST every badge-earned event here, at least once, signed as Standard Webhooks do",
                metavar="URL")
    add_setting(hook, "webhook_secret_file", "the signing secret, whsec_... (`badged events secret` makes one; "
                "required with --webhook)", metavar="PATH")
    add_setting(hook, "webhook_group", "consumer group holding the webhook's position", metavar="NAME",
                default="webhook")
    add_setting(hook, "sink", "publish every badge-earned event to NATS JetStream, at least once, de-duplicated by "
                "Nats-Msg-Id", metavar="nats://HOST:PORT/SUBJECT")
    add_setting(hook, "sink_group", "consumer group holding the --sink's position", metavar="NAME", default="nats")
    run.set_defaults(handler=_run)

    recheck = commands.add_parser("recheck", parents=[spec, database, logs],
                                  help="finish the badge checks triggers deferred (badged run does it every second)")
    recheck.set_defaults(handler=_recheck)

    status = commands.add_parser("status", parents=[spec, database, logs],
                                 help="per badge: in sync, drifted, missing or pending; awards so far")
    status.set_defaults(handler=_status)

    backfill = commands.add_parser("backfill", parents=[spec, database, logs],
                                   help="award badges to users who already qualify (existing rows)")
    backfill.add_argument("--badge", action="append", metavar="CODE",
                          help="only this badge (repeatable; default: every insert and update badge)")
    backfill.add_argument("--dry-run", action="store_true", help="count what would be awarded, award nothing")
    backfill.add_argument("--batch-size", type=int, default=1000, metavar="N", help="rows per transaction")
    backfill.set_defaults(handler=_backfill)

    add_listen_command(commands, database, logs)

    add_events_commands(commands, database, logs)

    add_migrate_command(commands, spec, database, logs)

    add_test_command(commands, spec, logs)

    add_explain_command(commands, spec, database, logs)

    demo = commands.add_parser("demo", help="start a throw-away PostgreSQL and show badges being earned")
    demo.add_argument("--log-level", choices=LEVELS, default="warning", help=argparse.SUPPRESS)
    demo.add_argument("--log-format", default="console", help=argparse.SUPPRESS)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and --version exit here, before any BADGED_* is read
    try:
        _use_options(args)
    except OptionsError as exc:
        for line in exc.lines():
            _error(line)
        return EXIT_ERROR
    configure_logging(args.log_level, args.log_format)
    dsn = resolve_dsn(getattr(args, "dsn", None))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SpecError as exc:
        for line in exc.lines():
            _error(scrub(line, dsn))
    except BadgedError as exc:
        _error(scrub(str(exc), dsn))
    except psycopg.Error as exc:
        _error(scrub(f"database error: {message_of(exc)}", dsn))
    except KeyboardInterrupt:
        _error("interrupted")
    return EXIT_ERROR


def _error(message: str) -> None:
    print(f"badged: error: {message}", file=sys.stderr)


def _use_options(args: argparse.Namespace) -> None:
    """Every BADGED_* setting, flags over the environment over defaults, into *args*; OptionsError if one is bad.

    Every setting is checked, including those this command does not use: a deployment's environment is
    usually shared by its commands, and a bad value should fail the first of them.
    """
    flags = {name: getattr(args, dest) for dest, name in _SETTING_OF_FLAG.items() if hasattr(args, dest)}
    flags = {name: ",".join(value) if isinstance(value, list) else value  # a repeated flag: as its variable
             for name, value in flags.items()}
    options = load_options(flags, flag_names={name: "--" + dest.replace("_", "-")
                                              for dest, name in _SETTING_OF_FLAG.items()})
    values = options.model_dump(by_alias=True)
    for dest, name in _SETTING_OF_FLAG.items():
        if hasattr(args, dest):
            setattr(args, dest, values[name])
    if hasattr(args, "dsn"):
        args.dsn = options.dsn.get_secret_value() if options.dsn else None
    args.options = options


def _validate(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    badges = badges_of(args, settings)
    codes = ", ".join(badge.code for badge in badges)
    print(f"{args.badges}: {len(badges)} badges valid" + (f" ({codes})" if codes else ""))
    return EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    badges = badges_of(args, settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        outcome = reconcile(conn, badges, settings, apply=False)
    if args.output == "json":
        print(plan_json(outcome.plan, badges=len(badges)))
    else:
        print(plan_text(outcome.plan, badges=len(badges)))
    return EXIT_CHANGES if args.detailed_exitcode and not outcome.plan.in_sync else EXIT_OK


def _reconcile(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    badges = badges_of(args, settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        outcome = reconcile(conn, badges, settings, apply=True)
    print(outcome_json(outcome) if args.output == "json" else outcome_text(outcome))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from badged.daemon import DaemonOptions, run_daemon
    from badged.sources import Source
    from badged.sources.file import FileSource

    settings = settings_of(args)
    source: Source
    if args.configmap:
        from badged.sources.configmap import ConfigMapSource

        source = ConfigMapSource.from_reference(args.configmap)
    else:
        source = FileSource(args.badges)
    options = DaemonOptions(dsn=resolve_dsn(args.dsn), settings=settings, resync_seconds=args.resync,
                            allow_empty=args.allow_empty, http=args.http or None, sinks=_sinks(args),
                            recheck_seconds=args.recheck_interval)
    return run_daemon(source, options)


def _sinks(args: argparse.Namespace) -> tuple[SinkSpec, ...]:
    """The sinks of ``badged run``, each checked now (a bad URL or secret file fails the start, not the sink)."""
    from badged.sink_tasks import SinkSpec

    sinks = []
    if args.webhook:
        from badged.sinks.webhook import WebhookSink, read_secret

        if args.webhook_secret_file is None:
            raise ConfigError("--webhook needs --webhook-secret-file (the signing secret receivers verify with; "
                              "`badged events secret` makes one)")
        url, secret = args.webhook, read_secret(args.webhook_secret_file)
        WebhookSink(url, secret)  # checks the URL
        sinks.append(SinkSpec("webhook", args.webhook_group, lambda: WebhookSink(url, secret)))
    if args.sink:
        from badged.sinks.nats import NatsSink

        broker = args.sink
        NatsSink.from_url(broker)  # checks the URL
        sinks.append(SinkSpec("nats", args.sink_group, lambda: NatsSink.from_url(broker)))
    if len({sink.group for sink in sinks}) < len(sinks):
        raise ConfigError("--webhook-group and --sink-group must differ: each sink keeps its own position")
    return tuple(sinks)


def _status(args: argparse.Namespace) -> int:
    from badged.status import badge_statuses, read_award_stats, read_rechecks, status_json, status_text

    settings = settings_of(args)
    badges = badges_of(args, settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        outcome = reconcile(conn, badges, settings, apply=False, verify=False)
        statuses = badge_statuses(badges, outcome.plan, read_award_stats(conn, settings))
        rechecks = read_rechecks(conn, settings)
    print(status_json(statuses, outcome.plan, rechecks) if args.output == "json"
          else status_text(statuses, outcome.plan, rechecks))
    return EXIT_OK if outcome.plan.in_sync else EXIT_CHANGES


def _recheck(args: argparse.Namespace) -> int:
    from badged.recheck import Result, drain

    settings = settings_of(args)
    badges = badges_of(args, settings)
    with connect(resolve_dsn(args.dsn), settings) as conn:
        if not own_table_exists(conn, settings, RECHECK_TABLE):
            raise ConfigError("badged's recheck table does not exist yet: run `badged reconcile --once` first")
        drained = drain(conn, badges, settings)
    counts = drained.counts
    left = (f"{drained.left} left: a transaction is still checking the same user; run again, or let badged run "
            "finish them" if drained.left else "none left")
    print(f"rechecked {drained.done}: {counts[Result.AWARDED]} awarded ({drained.awards} awards), "
          f"{counts[Result.NOT_EARNED]} not earned, {counts[Result.DROPPED]} dropped (badge gone), "
          f"{counts[Result.FAILED]} failed; {left}")
    return EXIT_OK


def _backfill(args: argparse.Namespace) -> int:
    from badged.backfill import BackfillInterrupted, backfill_badges

    settings = settings_of(args)
    show = _progress_printer() if sys.stderr.isatty() else None
    done = backfill_badges(resolve_dsn(args.dsn), badges_of(args, settings), settings, only=args.badge or (),
                           source=str(args.badges), batch_size=args.batch_size, dry_run=args.dry_run,
                           on_progress=show)
    try:
        for result in done:
            if result.progress is None:
                print(f"{result.badge}: skipped: {result.skipped}")
                continue
            if show:
                print(file=sys.stderr)
            verb = "would award" if args.dry_run else "awarded"
            progress = result.progress
            failed = f", condition failed on {progress.failed_rows} rows" if progress.failed_rows else ""
            print(f"{result.badge}: {verb} {progress.awarded} (of {progress.rows} rows{failed})")
    except BackfillInterrupted as exc:
        print(f"\n{exc.badge}: interrupted; awards already made stay; run again to continue "
              "(holders are skipped)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _progress_printer() -> Callable[[Progress], None]:
    def show(progress: Progress) -> None:
        share = progress.rows / progress.total_rows if progress.total_rows else 1.0
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r{progress.badge}: [{bar:<30}] {share:4.0%} {progress.rows}/{progress.total_rows} rows, "
                         f"{progress.awarded} awarded")
        sys.stderr.flush()

    return show


def _demo(args: argparse.Namespace) -> int:
    from badged.demo import run_demo

    return run_demo(sys.stdout)


def run() -> Any:
    """Console-script entry point."""
    sys.exit(main())
