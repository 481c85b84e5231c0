"""What the rendered triggers do inside a real PostgreSQL: awards, notifications, guards, rights."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.conftest import SEED_BADGES
from tests.helpers import apply, awards, badge


def add_user(conn: psycopg.Connection[Any], name: str, joined: str = "now()") -> int:
    row = conn.execute(
        f"INSERT INTO auth_user (username, date_joined) VALUES (%s, {joined}) RETURNING id", (name,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_sketches(conn: psycopg.Connection[Any], user: int, count: int, views: int = 0) -> None:
    for n in range(count):
        conn.execute("INSERT INTO dummy_sketch (user_id, title, hit_views) VALUES (%s, %s, %s)",
                     (user, f"sketch {n}", views))


def test_collector_is_earned_on_the_fifth_sketch(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    bob = add_user(conn, "bob")
    add_sketches(conn, bob, 4)
    assert awards(conn) == set()
    add_sketches(conn, bob, 1)
    assert awards(conn) == {("collector", str(bob))}


def test_star_is_earned_when_an_update_passes_1000_views(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    bob = add_user(conn, "bob")
    add_sketches(conn, bob, 1)
    conn.execute("UPDATE dummy_sketch SET hit_views = 1000")
    assert awards(conn) == set()
    conn.execute("UPDATE dummy_sketch SET hit_views = 1001")
    assert awards(conn) == {("star", str(bob))}


def test_pionner_is_earned_on_an_update_of_a_user_who_joined_over_a_year_ago(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    apply(dsn, SEED_BADGES)
    old = add_user(conn, "ann", "now() - interval '2 years'")
    add_user(conn, "bob")
    assert awards(conn) == set(), "an update badge does not fire on insert"
    conn.execute("UPDATE auth_user SET last_login = now()")
    assert awards(conn) == {("pionner", str(old))}


def test_a_user_holding_one_badge_earns_the_others(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """The original compared code=code, so holding any badge blocked every other one."""
    apply(dsn, SEED_BADGES)
    ann = add_user(conn, "ann", "now() - interval '2 years'")
    conn.execute("UPDATE auth_user SET last_login = now()")
    add_sketches(conn, ann, 5)
    conn.execute("UPDATE dummy_sketch SET hit_views = 5000 WHERE id = (SELECT min(id) FROM dummy_sketch)")
    assert awards(conn) == {("pionner", str(ann)), ("collector", str(ann)), ("star", str(ann))}


def test_each_badge_is_awarded_once_and_notified_once(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    bob = add_user(conn, "bob")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN badge_earned")
        add_sketches(conn, bob, 8)
        payloads = [json.loads(n.payload) for n in listener.notifies(timeout=1.0, stop_after=2)]
    assert len(payloads) == 1
    (award_id,) = conn.execute("SELECT id FROM badged.award").fetchone() or (None,)
    assert payloads[0] == {"award_id": award_id, "badge": "collector", "user_id": str(bob)}
    assert conn.execute("SELECT count(*) FROM badged.award").fetchone() == (1,)


def test_notify_payload_stays_small_for_huge_text_user_ids(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE post (author text NOT NULL, body text)")
    apply(dsn, [badge("writer", "true", table="post", user_field="author")])
    huge = "u" * 20000
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN badge_earned")
        conn.execute("INSERT INTO post VALUES (%s, 'hello')", (huge,))
        (note,) = list(listener.notifies(timeout=2.0, stop_after=1))
    assert len(note.payload) < 8000
    assert json.loads(note.payload)["user_id"] is None
    assert awards(conn) == {("writer", huge)}


def test_delete_badges_read_old_and_never_fail_the_delete(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, [
        badge("tidy", "OLD.hit_views = 0", event="delete"),
        badge("bare_old", "title = 'draft'", event="delete"),
    ])
    bob = add_user(conn, "bob")
    conn.execute("INSERT INTO dummy_sketch (user_id, title) VALUES (%s, 'draft')", (bob,))
    conn.execute("DELETE FROM dummy_sketch")
    assert awards(conn) == {("tidy", str(bob)), ("bare_old", str(bob))}
    assert conn.execute("SELECT count(*) FROM dummy_sketch").fetchone() == (0,)


@pytest.mark.parametrize("key_type, value", [
    ("integer", "7"), ("bigint", "9007199254740993"),
    ("uuid", "6f1c0d5e-8a59-4c1e-9d0c-2b1f0c3a4d5e"), ("text", "alice@example.com"),
])
def test_any_user_key_type_works(dsn: str, conn: psycopg.Connection[Any], key_type: str, value: str) -> None:
    conn.execute(f"CREATE TABLE event (owner {key_type} NOT NULL, kind text)")
    apply(dsn, [badge("first_event", "kind = 'signup'", table="event", user_field="owner")])
    conn.execute("INSERT INTO event VALUES (%s, 'signup'), (%s, 'signup')", (value, value))
    assert awards(conn) == {("first_event", value)}


def test_a_null_user_earns_nothing_and_the_write_succeeds(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE comment (author_id integer)")
    apply(dsn, [badge("talker", "true", table="comment", user_field="author_id")])
    conn.execute("INSERT INTO comment VALUES (NULL)")
    assert awards(conn) == set()


def test_a_failing_condition_warns_and_does_not_fail_the_write(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, [
        badge("broken", "hit_views / (hit_views - hit_views) > 1"),
        badge("bad_cast", "title::integer > 3"),
        badge("fine", "true"),
    ])
    warnings: list[str] = []
    conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
    bob = add_user(conn, "bob")
    conn.execute("INSERT INTO dummy_sketch (user_id, title, hit_views) VALUES (%s, 'not a number', 5)", (bob,))
    assert conn.execute("SELECT count(*) FROM dummy_sketch").fetchone() == (1,)
    assert awards(conn) == {("fine", str(bob))}
    assert any("broken" in w and "division by zero" in w for w in warnings), warnings
    assert any("bad_cast" in w for w in warnings), warnings


def test_the_guard_assigns_no_transaction_id_when_nothing_is_awarded(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """Evaluating conditions must not burn subtransaction ids (a read-only guard)."""
    apply(dsn, SEED_BADGES)
    bob = add_user(conn, "bob")
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (bob,))
    with conn.transaction():
        conn.execute("UPDATE dummy_sketch SET title = 'x'")  # runs Star's WHEN; collector does not fire
        conn.execute("UPDATE auth_user SET last_login = now()")  # runs Pionner's guarded condition: false
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' "
                           "AND pid = pg_backend_pid()").fetchone()
    assert row == (1,), "only the top-level transaction holds an xid; no subtransaction got one"


def test_update_badges_reading_only_the_row_skip_unrelated_updates(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    (definition,) = conn.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                                 "WHERE tgname = 'badged_public$dummy_sketch$update_of'").fetchone() or ("",)
    assert "UPDATE OF hit_views" in definition
    assert "record_image_ne(ROW(old.hit_views), ROW(new.hit_views))" in definition
    (pionner,) = conn.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                              "WHERE tgname = 'badged_public$auth_user$update'").fetchone() or ("",)
    assert "UPDATE OF" not in pionner, "age() depends on the clock: every update must re-check it"
    conn.execute("SELECT pg_stat_reset()")
    conn.execute("SET track_functions = 'all'")
    bob = add_user(conn, "bob")
    add_sketches(conn, bob, 1)
    conn.execute("UPDATE dummy_sketch SET title = 'renamed'")
    conn.execute("UPDATE dummy_sketch SET hit_views = hit_views")  # Django's save(): set but unchanged
    calls = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
                         "WHERE funcname = 'badged_public$dummy_sketch$update_of'").fetchone()
    assert calls == (0,)


def test_partitioned_tables_get_one_trigger_on_the_parent(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE play (user_id int NOT NULL, at date NOT NULL) PARTITION BY RANGE (at)")
    conn.execute("CREATE TABLE play_2025 PARTITION OF play FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    conn.execute("CREATE TABLE play_2026 PARTITION OF play FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    items = [badge("player", "true", table="play")]
    apply(dsn, items)
    conn.execute("INSERT INTO play VALUES (1, '2025-06-01'), (2, '2026-06-01')")
    assert awards(conn) == {("player", "1"), ("player", "2")}
    second = apply(dsn, items)
    assert second.plan.in_sync, "the clones PostgreSQL makes on partitions are not drift"


def test_a_non_superuser_app_role_earns_badges(dsn: str, conn: psycopg.Connection[Any], app_role: str) -> None:
    apply(dsn, SEED_BADGES)
    with psycopg.connect(app_role, autocommit=True) as app:
        assert app.execute("SELECT has_schema_privilege('badged', 'USAGE')").fetchone() == (False,)
        row = app.execute("INSERT INTO auth_user (username) VALUES ('eve') RETURNING id").fetchone()
        assert row is not None
        for _ in range(5):
            app.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (row[0],))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM badged.award")
    assert awards(conn) == {("collector", str(row[0]))}


def test_a_search_path_trap_cannot_hijack_the_function(dsn: str, conn: psycopg.Connection[Any],
                                                       app_role: str) -> None:
    """The pinned search_path ignores objects an attacker puts earlier on theirs."""
    apply(dsn, [badge("counted", "count(*) >= 1 from dummy_sketch where user_id = NEW.user_id")])
    conn.execute("CREATE SCHEMA trap")
    conn.execute("CREATE TABLE trap.dummy_sketch (user_id int)")  # empty: count would be 0
    conn.execute("GRANT USAGE ON SCHEMA trap TO PUBLIC")
    with psycopg.connect(app_role, autocommit=True) as app:
        app.execute("SET search_path = trap, public")
        row = app.execute("INSERT INTO public.auth_user (username) VALUES ('eve') RETURNING id").fetchone()
        assert row is not None
        app.execute("INSERT INTO public.dummy_sketch (user_id) VALUES (%s)", (row[0],))
    assert awards(conn) == {("counted", str(row[0]))}


def test_awards_made_in_a_rolled_back_transaction_disappear(dsn: str, conn: psycopg.Connection[Any]) -> None:
    apply(dsn, SEED_BADGES)
    bob = add_user(conn, "bob")
    with psycopg.connect(dsn) as tx:
        for _ in range(5):
            tx.execute("INSERT INTO dummy_sketch (user_id) VALUES (%s)", (bob,))
        tx.rollback()
    assert awards(conn) == set()
