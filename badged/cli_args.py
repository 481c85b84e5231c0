"""What every ``badged`` command's parser shares: the parser class, exit codes, BADGED_* flags, settings of args.

Its own module so that ``badged.cli`` and the command groups it adds (``cli_events``, ``cli_listen``) use
the same pieces without importing each other.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from badged.settings import Options, Settings
from badged.spec import Badge, load_badges

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1 (2 means "changes pending" for plan)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"badged: error: {message}\n")


#: flag (its argparse dest; the flag is --dest-with-dashes) -> the BADGED_* setting it overrides
SETTING_OF_FLAG = {
    "badges": "BADGED_BADGES", "dsn": "BADGED_DSN", "prefix": "BADGED_PREFIX", "schema": "BADGED_SCHEMA",
    "channel": "BADGED_CHANNEL", "allow_empty": "BADGED_ALLOW_EMPTY", "lock_timeout": "BADGED_LOCK_TIMEOUT",
    "statement_timeout": "BADGED_STATEMENT_TIMEOUT", "output": "BADGED_OUTPUT", "resync": "BADGED_RESYNC",
    "recheck_interval": "BADGED_RECHECK_INTERVAL", "http": "BADGED_HTTP", "configmap": "BADGED_CONFIGMAP",
    "webhook": "BADGED_WEBHOOK", "webhook_secret_file": "BADGED_WEBHOOK_SECRET_FILE",
    "webhook_group": "BADGED_WEBHOOK_GROUP", "sink": "BADGED_SINK", "sink_group": "BADGED_SINK_GROUP",
    "group": "BADGED_GROUP", "log_level": "BADGED_LOG_LEVEL",
    "log_format": "BADGED_LOG_FORMAT", "allow_volatile": "BADGED_ALLOW_VOLATILE",
}


def setting(dest: str) -> dict[str, Any]:
    """argparse keywords of a flag that overrides a BADGED_* setting: a string, None when not given.

    argparse neither reads the environment nor parses the value: ``cli._use_options`` does both after
    parsing, with ``badged.settings.Options``, so ``--help`` works whatever the environment holds and a
    flag's value is parsed exactly as its variable's (``--resync 5m``).
    """
    if dest not in SETTING_OF_FLAG:
        raise ValueError(f"--{dest.replace('_', '-')} overrides no BADGED_* setting (add it to SETTING_OF_FLAG)")
    return {"dest": dest, "default": None}


def add_setting(group: Any, dest: str, help: str, *, metavar: str | None = None, default: str | None = None) -> None:
    """Add the flag ``--dest-with-dashes`` overriding a BADGED_* setting; its help ends "(env VAR; default D)".

    The variable's name is taken from ``SETTING_OF_FLAG``, so the help cannot name another one.
    """
    tail = f"env {SETTING_OF_FLAG.get(dest, '?')}" + (f"; default {default}" if default else "")
    group.add_argument(f"--{dest.replace('_', '-')}", **setting(dest), metavar=metavar,
                       help=f"{help} ({tail})" if help else f"({tail})")


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings of the parsed *args* (after ``cli._use_options``)."""
    options: Options = args.options
    return options.settings()


def badges_of(args: argparse.Namespace, settings: Settings) -> tuple[Badge, ...]:
    """The badges of the badge.json *args* name."""
    return load_badges(args.badges, prefix=settings.prefix, allow_empty=args.allow_empty, schema=settings.schema)
