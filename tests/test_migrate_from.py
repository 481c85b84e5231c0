"""``badged migrate-from django-pg-badges`` against the original's own SQL (tests/pg_badges_original.py).

The Django project test (test_django_migrate.py) installs the original package itself; these tests cover
the migration's guarantees on a bare database: awards imported once and as history (no event), only the
original's objects dropped, idempotence, and nothing lost to writers running during the migration.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from badged.db import connect
from badged.errors import ConfigError
from badged.listen import Subscription
from badged.migrate_from import migrate_from_pg_badges
from badged.output import migration_text
from badged.settings import Settings
from tests.helpers import apply, awards, badges_from, triggers
from tests.pg_badges_original import (
    ORIGINAL_BADGES,
    create_badge_triggers,
    install_original,
    original_awards,
    original_cleanup,
)

SETTINGS = Settings()


def add_user(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("INSERT INTO auth_user (username) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def sketches(conn: psycopg.Connection[Any], user: int, count: int, hit_views: int = 0) -> None:
    for _ in range(count):
        conn.execute("INSERT INTO dummy_sketch (user_id, hit_views) VALUES (%s, %s)", (user, hit_views))


def earn_with_the_original(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Users who earn one badge each under the original (its defect: one badge per user, ever)."""
    users = {name: add_user(conn, name) for name in ("ann", "bob", "cy", "dee")}
    sketches(conn, users["ann"], 5)
    sketches(conn, users["bob"], 6)
    sketches(conn, users["cy"], 1)
    conn.execute("UPDATE dummy_sketch SET hit_views = 5000 WHERE user_id = %s", (users["cy"],))
    conn.execute("UPDATE auth_user SET date_joined = now() - interval '2 years' WHERE id = %s", (users["dee"],))
    return users


def migrate(dsn: str, *, apply: bool = True, items: list[dict[str, str]] = ORIGINAL_BADGES) -> Any:
    with connect(dsn, SETTINGS) as conn:
        return migrate_from_pg_badges(conn, badges_from(items), SETTINGS, apply=apply)


def original_objects(conn: psycopg.Connection[Any]) -> set[str]:
    functions = {f"function {name}" for (name,) in conn.execute(
        "SELECT proname FROM pg_proc WHERE starts_with(proname::text, 'badge_')").fetchall()}
    trigger_names = {f"trigger {name}" for (name,) in conn.execute(
        "SELECT tgname FROM pg_trigger WHERE starts_with(tgname::text, 'badge_')").fetchall()}
    return functions | trigger_names


def test_a_dry_run_shows_everything_and_changes_nothing(conn: psycopg.Connection[Any], dsn: str) -> None:
    install_original(conn)
    users = earn_with_the_original(conn)
    before = original_objects(conn)

    migration = migrate(dsn, apply=False)

    text = migration_text(migration, badges=3)
    assert "+ import 4 awards as history, never delivered as events: collector 2, pionner 1, star 1" in text
    assert "- trigger badge_collector on public.dummy_sketch" in text
    assert "- function public.badge_pionner()" in text
    assert "Dry run: nothing was changed" in text
    assert original_objects(conn) == before == {f"{kind} badge_{code}" for kind in ("function", "trigger")
                                                for code in ("pionner", "collector", "star")}
    assert conn.execute("SELECT to_regnamespace('badged')").fetchone() == (None,)
    assert len(original_awards(conn)) == len(users)


def test_the_migration_imports_as_history_drops_the_original_and_a_second_run_does_nothing(
        conn: psycopg.Connection[Any], dsn: str) -> None:
    install_original(conn)
    users = earn_with_the_original(conn)
    apply(dsn, ORIGINAL_BADGES)  # badged added beside it: both sets of triggers fire from now on
    assert _drain(dsn, "app") == []  # the group exists, positioned before eve's award and the migration
    eve = add_user(conn, "eve")
    sketches(conn, eve, 5)  # awarded by both: the import keeps badged's
    assert [(e.badge, e.user_id) for e in _drain(dsn, "app")] == [("collector", str(eve))]
    badged_eve = conn.execute("SELECT id, awarded_at FROM badged.award WHERE user_id = %s", (str(eve),)).fetchone()
    old = original_awards(conn)

    migration = migrate(dsn)

    assert migration.imported == len(users)  # eve's was badged's already
    assert awards(conn) == old
    assert conn.execute("SELECT count(*) FROM badged.award").fetchone() == (len(old),)
    assert conn.execute("SELECT id, awarded_at FROM badged.award WHERE user_id = %s",
                        (str(eve),)).fetchone() == badged_eve
    assert conn.execute("SELECT count(*), count(DISTINCT source_id) FROM badged.imported_award "
                        "WHERE source = 'django-pg-badges'").fetchone() == (len(users), len(users))
    assert original_objects(conn) == set()
    assert {"badged_public$dummy_sketch$insert", "badged_public$dummy_sketch$update_of"} <= triggers(dsn)
    # history: neither the group positioned before nor one created after sees an imported award
    assert _drain(dsn, "late") == [] and _drain(dsn, "app") == []
    # badged's triggers are live, the original's are not
    fay = add_user(conn, "fay")
    sketches(conn, fay, 5)
    assert ("collector", str(fay)) in awards(conn) and ("collector", str(fay)) not in original_awards(conn)
    assert [(e.badge, e.user_id) for e in _drain(dsn, "app")] == [("collector", str(fay))]
    assert [(e.badge, e.user_id) for e in _drain(dsn, "late")] == [("collector", str(fay))]

    again = migrate(dsn, apply=False)
    assert again.nothing_to_do, migration_text(again, badges=3)
    assert migration_text(again, badges=3).startswith("Nothing to migrate")
    assert migrate(dsn).imported == 0
    assert conn.execute("SELECT count(*) FROM badged.award").fetchone() == (len(old) + 1,)


def _drain(dsn: str, group: str) -> list[Any]:
    """Every event *group* (created when new, positioned "now") hands out within a second; its position saved."""
    got = []
    subscription = Subscription(dsn, group=group, poll_interval=0.05)

    def consume() -> None:
        for event in subscription:
            got.append(event)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(1.0)
    subscription.close()
    thread.join(10)
    return got


def test_only_what_the_originals_template_made_is_dropped(conn: psycopg.Connection[Any], dsn: str) -> None:
    install_original(conn)
    conn.execute("""
        CREATE FUNCTION badge_helper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER badge_helper AFTER INSERT ON dummy_sketch FOR EACH ROW EXECUTE FUNCTION badge_helper();
        CREATE FUNCTION badge_count() RETURNS integer LANGUAGE sql AS 'SELECT 1';
        CREATE FUNCTION badgeless() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            INSERT INTO badges_badge (user_id, name, code) VALUES (1, 'x', 'y'); RETURN NEW; END $$;
    """)
    migration = migrate(dsn)
    assert {f.name for f in migration.original.functions} == {"badge_pionner", "badge_collector", "badge_star"}
    assert original_objects(conn) == {"function badge_helper", "trigger badge_helper", "function badge_count"}
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'badgeless'").fetchone() == (1,)


def test_functions_of_badges_the_original_left_behind_are_found(conn: psycopg.Connection[Any], dsn: str) -> None:
    """It never dropped a function: a badge renamed long ago left one, with no trigger."""
    install_original(conn, [*ORIGINAL_BADGES, {**ORIGINAL_BADGES[1], "name": "Hoarder", "code": "hoarder"}])
    create_badge_triggers(conn, ORIGINAL_BADGES)  # run again, hoarder gone from badge.json
    assert "function badge_hoarder" in original_objects(conn) and "trigger badge_hoarder" not in original_objects(conn)
    migrate(dsn)
    assert original_objects(conn) == set()


def test_the_originals_cleanup_drops_badgeds_triggers_and_badged_repairs_them(conn: psycopg.Connection[Any],
                                                                              dsn: str) -> None:
    """Its LIKE 'badge_%' matches badged_…: an old deploy step re-running it drops badged's triggers."""
    apply(dsn, ORIGINAL_BADGES)
    ours = triggers(dsn)
    dropped = original_cleanup(conn)
    assert set(dropped) == ours and triggers(dsn) == set()
    repaired = apply(dsn, ORIGINAL_BADGES)
    assert {(s.cause.value, s.kind) for s in repaired.plan.steps} == {("missing", "trigger")}
    assert set(dropped) <= triggers(dsn)


def test_a_time_column_of_the_originals_table_is_kept(conn: psycopg.Connection[Any], dsn: str) -> None:
    install_original(conn)
    conn.execute("ALTER TABLE badges_badge ADD COLUMN created timestamptz DEFAULT '2019-05-01 12:00+00'")
    user = add_user(conn, "ann")
    sketches(conn, user, 5)
    migration = migrate(dsn)
    assert migration.original.table is not None and migration.original.table.time_column == "created"
    assert conn.execute("SELECT awarded_at::text FROM badged.award").fetchone() == ("2019-05-01 12:00:00+00",)


def test_writers_running_during_the_migration_lose_no_award(conn: psycopg.Connection[Any], dsn: str) -> None:
    """8 writers add sketches, moving together along 2,000 users, before, during and after the migration.

    badged is installed first with a badge.json whose collector needs 10,000 sketches: its reconcile in the
    migration changes nothing (takes no table lock), and it awards nothing itself, so every collector award
    is one the original made, up to the moment the migration dropped its trigger, and must be imported.
    """
    install_original(conn, ORIGINAL_BADGES[1:2])
    raised = [{**ORIGINAL_BADGES[1], "condition": "count(id) >= 10000 from dummy_sketch where user_id = NEW.user_id"}]
    apply(dsn, raised)
    users = [user for (user,) in conn.execute(
        "INSERT INTO auth_user (username) SELECT 'u' || n FROM generate_series(1, 2000) n RETURNING id").fetchall()]
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            n = offset
            while not stop.is_set():
                try:
                    # writers overlap on each user as they pass it: users qualify one after another, for seconds
                    own.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (users[n // 2 % len(users)],))
                except (psycopg.errors.LockNotAvailable, psycopg.errors.UniqueViolation):
                    continue  # the second: the original's own race (two writers awarding one user) fails the write
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    return
                n += 1

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    migration = migrate(dsn, items=raised)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert migration.imported > 0
    qualifying = {str(user) for (user,) in conn.execute(
        "SELECT user_id FROM dummy_sketch GROUP BY user_id HAVING count(*) >= 5").fetchall()}
    assert original_awards(conn) == awards(conn)
    assert {user for _, user in awards(conn)} < qualifying  # some qualified only after the migration
    assert conn.execute("SELECT count(*) FROM badged.award GROUP BY badge, user_id ORDER BY 1 DESC LIMIT 1"
                        ).fetchone() == (1,)


def test_the_command_line(cli: Any, conn: psycopg.Connection[Any], dsn: str, write_badges: Any) -> None:
    install_original(conn)
    earn_with_the_original(conn)
    path = str(write_badges(ORIGINAL_BADGES))
    code, out, err = cli("migrate-from", "django-pg-badges", "--dry-run", "--badges", path, "--dsn", dsn)
    assert code == 0, err
    assert "+ import 4 awards as history" in out and "Dry run" in out
    code, out, _ = cli("migrate-from", "django-pg-badges", "--badges", path, "--dsn", dsn, "--output", "json")
    report = json.loads(out)
    assert (code, report["applied"], report["imported"], len(report["drop_functions"])) == (0, True, 4, 3)
    code, out, _ = cli("migrate-from", "django-pg-badges", "--badges", path, "--dsn", dsn)
    assert code == 0 and out.startswith("Nothing to migrate"), out


def test_awards_written_straight_into_the_originals_table_during_the_migration_are_imported(
        conn: psycopg.Connection[Any], dsn: str) -> None:
    """An admin or ORM insert into badges_badge (no trigger) waits for the migration's lock, then is imported
    by a second run; none committed before the import is missed."""
    install_original(conn, ORIGINAL_BADGES[1:2])
    users = [user for (user,) in conn.execute(
        "INSERT INTO auth_user (username) SELECT 'u' || n FROM generate_series(1, 3000) n RETURNING id").fetchall()]
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as own:
            for user in users:
                if stop.is_set():
                    return
                own.execute("INSERT INTO badges_badge (user_id, name, code) VALUES (%s, 'Collector', 'collector')",
                            (user,))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.2)
    migrate(dsn)
    stop.set()
    thread.join(10)
    imported = {user for _, user in awards(conn)}
    written = {user for _, user in original_awards(conn)}
    assert imported and imported <= written
    migrate(dsn)  # what committed after the first run's import: the second run takes it
    assert awards(conn) == original_awards(conn)


def test_a_repeatable_read_default_is_overridden_and_a_callers_repeatable_read_refused(
        conn: psycopg.Connection[Any], dsn: str) -> None:
    install_original(conn)
    earn_with_the_original(conn)
    database = conn.info.dbname
    conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'").format(
        sql.Identifier(database)))
    with psycopg.connect(dsn) as caller:  # a transaction of the caller's, at the database's default
        caller.execute("SELECT 1")
        with pytest.raises(ConfigError, match="needs a READ COMMITTED transaction"):
            migrate_from_pg_badges(caller, badges_from(ORIGINAL_BADGES), SETTINGS, apply=True)
    assert migrate(dsn).imported == 4  # its own transaction: READ COMMITTED, whatever the default


def test_a_partitioned_table_and_a_prefix_starting_like_the_originals(conn: psycopg.Connection[Any],
                                                                      dsn: str) -> None:
    """Its trigger on a partitioned table (clones on the partitions) is dropped once; badged's prefix
    "badge_" does not hide the original's functions (badged's live in badged's schema)."""
    conn.execute("""
        CREATE TABLE art (id serial, user_id integer NOT NULL, kind text NOT NULL) PARTITION BY LIST (kind);
        CREATE TABLE art_a PARTITION OF art FOR VALUES IN ('a');
        CREATE TABLE art_b PARTITION OF art FOR VALUES IN ('b');
    """)
    artist = {"name": "Artist", "code": "artist", "condition": "NEW.kind = 'b'", "trigger_condition": "insert",
              "trigger_table": "art", "user_field": "user_id"}
    install_original(conn, [artist])
    user = add_user(conn, "ann")
    conn.execute("INSERT INTO art (user_id, kind) VALUES (%s, 'b')", (user,))
    settings = Settings(prefix="badge_")
    with connect(dsn, settings) as own:
        migration = migrate_from_pg_badges(own, badges_from([artist], settings), settings, apply=True)
    assert [t.display for t in migration.original.triggers] == ["badge_artist on public.art"]
    assert migration.imported == 1
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'badge_artist'").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'badge_artist'").fetchone() == (0,)


def test_another_schemas_original_is_left_alone_and_a_missing_table_refused(conn: psycopg.Connection[Any],
                                                                            dsn: str) -> None:
    """Schema per tenant: each tenant's badges_badge and functions; one migrates the search_path's only."""
    conn.execute("CREATE SCHEMA tenant; SET search_path = tenant, public")
    install_original(conn, ORIGINAL_BADGES[1:2])  # tenant.badges_badge, tenant.badge_collector()
    conn.execute("RESET search_path")
    with pytest.raises(ConfigError, match="no badges_badge table is on this connection's search_path"):
        migrate(dsn, apply=False)
    install_original(conn, ORIGINAL_BADGES[1:2])  # public's own
    migration = migrate(dsn)
    assert [f.display for f in migration.original.functions] == ["public.badge_collector()"]
    assert "tenant.badge_collector()" in migration_text(migration, badges=1)
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'badge_collector'").fetchone() == (1,)


def test_awards_of_a_badge_gone_from_badge_json_find_their_badge(conn: psycopg.Connection[Any], dsn: str) -> None:
    install_original(conn, ORIGINAL_BADGES[1:2])
    user = add_user(conn, "ann")
    conn.execute("INSERT INTO badges_badge (user_id, name, code) VALUES (%s, 'Old Timer', 'old')", (user,))
    migration = migrate(dsn, items=ORIGINAL_BADGES[1:2])
    assert "not in badge.json (imported all the same, as history): old" in migration_text(migration, badges=1)
    assert conn.execute("SELECT name, removed_at IS NOT NULL FROM badged.badge WHERE code = 'old'").fetchone() == (
        "Old Timer", True)
    assert migrate(dsn, items=ORIGINAL_BADGES[1:2], apply=False).plan.in_sync
