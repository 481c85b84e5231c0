"""``badged listen``: the parser and handler of the command that prints one JSON line per badge earned.

A subscription (``badged.listen``) feeds the JSON-lines sink through a forwarder; with ``--group`` the
position is durable and shared by the group's processes.
"""

from __future__ import annotations

import argparse
import signal
import sys

from badged.cli_args import EXIT_OK, Parser, setting, settings_of
from badged.db import resolve_dsn


def add_listen_command(commands: argparse._SubParsersAction[Parser], database: Parser, logs: Parser) -> None:
    """Add ``listen`` to *commands*, with the shared *database* and *logs* options."""
    listen = commands.add_parser("listen", parents=[database, logs],
                                 help="print one JSON line per badge earned, missing none")
    listen.add_argument("--since", type=int, metavar="AWARD_ID",
                        help="start with the awards after this id (default: from now)")
    listen.add_argument("--group", **setting("group"), metavar="NAME",
                        help="durable consumer group: resume where the group stopped; processes of one group "
                             "share the work (env BADGED_GROUP)")
    listen.add_argument("--batch-size", type=int, default=1000, metavar="N", help="awards read per query")
    listen.set_defaults(handler=_listen)


def _listen(args: argparse.Namespace) -> int:
    """The JSON-lines sink fed by a subscription; SIGTERM/SIGINT finish the batch in hand, save, exit."""
    import asyncio

    from badged.forwarder import Forwarder
    from badged.listen import Subscription
    from badged.sinks.jsonlines import JsonLinesSink

    subscription = Subscription(resolve_dsn(args.dsn), group=args.group, since=args.since, settings=settings_of(args),
                                batch_size=args.batch_size)

    async def follow() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, subscription.close)
        await Forwarder(subscription, JsonLinesSink(sys.stdout), replay=False).run()  # stdout parks nothing

    try:
        asyncio.run(follow())
    except BrokenPipeError:  # the reader went away (| head): not an error
        sys.stderr.close()
    return EXIT_OK
