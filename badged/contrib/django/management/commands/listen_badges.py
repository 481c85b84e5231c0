"""``manage.py listen_badges``: send the ``badge_earned`` signal once per award, until SIGTERM/SIGINT.

It iterates ``badged.subscribe()`` on the database of ``BADGED_DATABASE`` (``--database``):
without ``--group`` from now (or after ``--since``); with ``--group NAME`` from where the group
stopped, at least once (receivers should be idempotent on ``event.award_id``). SIGTERM or SIGINT
finish the batch in hand, save the group's position and exit 0. A receiver's exception stops the
command (with ``--group``, that batch is handed out again on the next start).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from badged.contrib.django.conf import command_errors, configure_logs, database_dsn, get_settings
from badged.contrib.django.signals import send_badge_earned
from badged.listen import Subscription

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_Handler = Callable[[int, FrameType | None], Any] | int | None


class Command(BaseCommand):  # type: ignore[misc, unused-ignore]
    help = "Send the badge_earned signal once per badge earned (runs until SIGTERM or SIGINT)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--group", default=None, metavar="NAME",
                            help="durable consumer group: resume where the group stopped; processes of one group "
                                 "share the work")
        parser.add_argument("--since", type=int, default=None, metavar="AWARD_ID",
                            help="start with the awards after this id (default: from now)")
        parser.add_argument("--batch-size", type=int, default=1000, metavar="N", help="awards read per query")
        parser.add_argument("--database", default=None,
                            help="alias in settings.DATABASES (default: settings.BADGED_DATABASE, else 'default')")

    def handle(self, *args: Any, **options: Any) -> None:
        configure_logs(options["verbosity"])
        conf = get_settings()
        dsn = database_dsn(options["database"] or conf.database)
        with command_errors(dsn):
            subscription = Subscription(dsn, group=options["group"], since=options["since"], settings=conf.badged,
                                        batch_size=options["batch_size"])
            previous = _on_stop_signals(subscription.close)
            try:
                with subscription:  # an unfinished batch is rolled back on the way out
                    for event in subscription:
                        close_old_connections()  # receivers may use the ORM in this long-lived process
                        send_badge_earned(event)
            finally:
                _restore(previous)


def _on_stop_signals(stop: Callable[[], None]) -> dict[signal.Signals, _Handler]:
    """SIGTERM/SIGINT call *stop* (in the main thread only, where Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, lambda _signum, _frame: stop()) for signum in _SIGNALS}


def _restore(previous: dict[signal.Signals, _Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
