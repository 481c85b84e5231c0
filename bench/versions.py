"""Before and after: the write path of this checkout against another commit's, side by side.

    python -m bench.versions --against 39bc765 [--quick] [--markdown FILE]

The other commit is checked out in a temporary git worktree; its triggers are
installed by its own ``badged reconcile --once`` (run with that worktree first on
``PYTHONPATH``), this checkout's by this process. Then every measure runs the three
databases — no triggers, the other version, this one — interleaved on one embedded
PostgreSQL, and reports the median per-round ratios, as the rest of ``bench`` does.

Measures (each insert is one pgbench transaction, prepared statements):

* the seed's badges where users already hold Collector (a running app's steady state);
* the seed's badges where the check runs (100,000 users below 5 sketches), on 1 and
  on 16 clients: what the concurrency protection of issue 10 adds;
* 50 tiered badges (there is always a next tier to check).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from badged.log_output import configure_logging
from bench.common import SCALES, Row, Scale, embedded_server, interleaved, median_ratio, progress
from bench.races import cost_database, timed
from bench.writes import SEED_BADGES, app_database, inserts, install_badged, tiered_badges

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """*commit* checked out (detached) in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="badged-versions-") as tmp:
        path = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True,
                       capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False,
                           capture_output=True)


def install_other(code: Path, dsn: str, items: list[dict[str, str]]) -> None:
    """The other version's ``badged reconcile --once`` for *items*."""
    badges = code / "bench-badge.json"
    badges.write_text(json.dumps(items))
    subprocess.run([sys.executable, "-m", "badged", "reconcile", "--once", "--dsn", dsn, "--badges", str(badges),
                    "--log-level", "error"], check=True, capture_output=True, cwd=code,
                   env={**os.environ, "PYTHONPATH": str(code)})


def compare(what: str, runs: dict[str, Callable[[], float]], rounds: int) -> list[Row]:
    progress(what)
    got = interleaved(runs, rounds)
    before, after = median_ratio(got["other"], got["none"]), median_ratio(got["this"], got["none"])
    return [Row(what, f"{before:.2f}", f"{after:.2f}", f"{median_ratio(got['this'], got['other']):.2f}",
                "report", None)]


def measure(admin_dsn: str, code: Path, scale: Scale, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    steady = {name: app_database(admin_dsn, f"versions_steady_{name}") for name in ("none", "other", "this")}
    install_other(code, steady["other"], SEED_BADGES)
    install_badged(steady["this"], SEED_BADGES)
    rows += compare("INSERT, 3 seed badges, users hold Collector, 1 client",
                    {name: inserts(dsn, scale, workdir) for name, dsn in steady.items()}, scale.rounds)

    users = 100_000 if scale.name != "smoke" else 2_000
    checking = {name: cost_database(admin_dsn, f"versions_{name}", users) for name in ("none", "other", "this")}
    install_other(code, checking["other"], SEED_BADGES)
    install_badged(checking["this"], SEED_BADGES)
    for clients in (1, 16):
        rows += compare(f"INSERT, 3 seed badges, the check runs, {clients} client{'s' * (clients > 1)}",
                        {name: timed(dsn, scale, workdir, clients) for name, dsn in checking.items()}, scale.rounds)

    tiered = {name: app_database(admin_dsn, f"versions_tiered_{name}") for name in ("none", "other", "this")}
    install_other(code, tiered["other"], tiered_badges())
    install_badged(tiered["this"], tiered_badges())
    rows += compare("INSERT, 50 tiered badges, 1 client",
                    {name: inserts(dsn, scale, workdir) for name, dsn in tiered.items()}, scale.rounds)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, metavar="COMMIT", help="the commit to compare with")
    parser.add_argument("--quick", action="store_const", dest="scale", const="quick", default="full")
    parser.add_argument("--smoke", action="store_const", dest="scale", const="smoke")
    parser.add_argument("--markdown", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    configure_logging("warning", "console")
    scale = SCALES[args.scale]
    with worktree(args.against) as code, embedded_server() as admin_dsn, \
            tempfile.TemporaryDirectory(prefix="badged-bench-") as tmp:
        rows = measure(admin_dsn, code, scale, Path(tmp))
    cells = [(row.what, row.baseline, row.badged, row.ratio) for row in rows]
    header = ("measure", f"before ({args.against}) ÷ no triggers", "after ÷ no triggers", "after ÷ before")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                    for row in [header, *cells]))
    if args.markdown:
        args.markdown.write_text("\n".join(["| " + " | ".join(header) + " |", "|---|---|---|---|"]
                                           + ["| " + " | ".join(c) + " |" for c in cells]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
