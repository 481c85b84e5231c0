"""The trigger functions as an attacker meets them: real roles on a real PostgreSQL.

badged's functions are SECURITY DEFINER: they run as the reconciling role inside
every application write. Each test here is an attack that worked before its fix
(issue 11, items 1 to 3), played by a role with no more rights than its story needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from badged.errors import DatabaseMismatch
from badged.settings import Settings
from tests.conftest import SEED_BADGES
from tests.helpers import apply, awards, badge, capture_logs, plan

COLLECTOR = "badged.\"badged_public$dummy_sketch$insert\""

#: a string no legitimate lower() returns for the titles below
HELLO = "hello"
SHOUTY = badge("shouty", f"lower(title) = '{HELLO}'")


@pytest.fixture
def make_role(admin_dsn: str, dsn: str) -> Iterator[Callable[..., str]]:
    """Create login roles for one test (dropped afterwards); returns a factory of their DSNs."""
    made: list[str] = []

    def make(*grants: str) -> str:
        role = f"badged_sec_{uuid.uuid4().hex[:8]}"
        made.append(role)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
        with psycopg.connect(dsn, autocommit=True) as conn:
            for grant in grants:  # test text: "... TO {role}"
                conn.execute(sql.SQL(grant).format(role=sql.Identifier(role)))
        return conninfo.make_conninfo(dsn, user=role)

    yield make
    for role in made:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _attacker(make_role: Callable[..., str]) -> str:
    """A role that may create objects in public, as every role could before PostgreSQL 15."""
    return make_role("GRANT CREATE ON SCHEMA public TO {role}")


def _plant(attacker_dsn: str) -> None:
    """Functions that shadow what the triggers call, counting their calls in a sequence anyone may advance."""
    with psycopg.connect(attacker_dsn, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE public.hijacked; GRANT USAGE ON SEQUENCE public.hijacked TO PUBLIC")
        # an exact match for text[] wins over pg_catalog.cardinality(anyarray) on the search_path
        conn.execute("CREATE FUNCTION public.cardinality(text[]) RETURNS int LANGUAGE sql "
                     "AS $$ SELECT pg_catalog.nextval('public.hijacked')::int * 0 $$")
        # an exact match for varchar wins over pg_catalog.lower(text)
        conn.execute("CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql "
                     f"AS $$ SELECT pg_catalog.nextval('public.hijacked')::text || '' || '{HELLO}' $$")
        conn.execute("GRANT EXECUTE ON FUNCTION public.lower(varchar), public.cardinality(text[]) TO PUBLIC")


def _hijacked_calls(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.hijacked").fetchone()
    assert row is not None
    return int(row[0])


def test_functions_planted_in_the_tables_schema_after_reconcile_never_run(
        dsn: str, conn: psycopg.Connection[Any], app_role: str, make_role: Callable[..., str]) -> None:
    apply(dsn, [*SEED_BADGES, SHOUTY])
    _plant(_attacker(make_role))
    with psycopg.connect(app_role, autocommit=True) as app:
        app.execute("INSERT INTO auth_user (username) VALUES ('ann')")
        for _ in range(5):
            app.execute("INSERT INTO dummy_sketch (user_id, title) VALUES (1, 'Nope')")
    assert _hijacked_calls(conn) == 0, "a planted function ran as the reconciling role"
    assert awards(conn) == {("collector", "1")}, "shouty is earned only through the planted lower()"


def test_a_function_planted_before_reconcile_is_not_chosen(
        dsn: str, conn: psycopg.Connection[Any], make_role: Callable[..., str]) -> None:
    """In a schema others may create in, a name pg_catalog also has is pg_catalog's: never blocked, never redirected."""
    _plant(_attacker(make_role))
    apply(dsn, [*SEED_BADGES, SHOUTY])
    conn.execute("INSERT INTO auth_user (username) VALUES ('ann')")
    conn.execute("INSERT INTO dummy_sketch (user_id, title) VALUES (1, 'Nope')")
    assert _hijacked_calls(conn) == 0
    assert awards(conn) == set()
    (path,) = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = %s::regprocedure",
                           (f"{COLLECTOR}()",)).fetchone() or (None,)
    assert path == ["search_path=pg_catalog, pg_temp"], "public is not searched once others may create there"


def test_a_function_in_a_schema_others_may_create_in_is_refused(
        dsn: str, conn: psycopg.Connection[Any], app_role: str, make_role: Callable[..., str]) -> None:
    """Whoever may create in its schema may add an overload PostgreSQL prefers (score(varchar) over score(text))."""
    conn.execute("CREATE FUNCTION public.score(text) RETURNS int LANGUAGE sql STABLE AS $$ SELECT length($1) $$")
    items = [badge("scored", "score(title) > 3")]
    apply(dsn, items)  # public is trusted: only the reconciling role (a superuser here) may create there
    attacker = _attacker(make_role)
    with pytest.raises(DatabaseMismatch) as refused:
        apply(dsn, items)
    (line,) = refused.value.lines()
    role = conninfo.conninfo_to_dict(attacker)["user"]
    assert f"calls public.score, in schema public, where {role} may create functions too" in line
    assert "REVOKE CREATE ON SCHEMA public" in line


def test_a_trusted_schemas_functions_and_operators_resolve_as_they_always_did(
        dsn: str, conn: psycopg.Connection[Any], app_role: str) -> None:
    conn.execute("CREATE FUNCTION public.score(text) RETURNS int LANGUAGE sql STABLE AS $$ SELECT length($1) $$")
    apply(dsn, [badge("scored", "score(title) > 3")])
    (path,) = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = %s::regprocedure",
                           (f"{COLLECTOR}()",)).fetchone() or (None,)
    assert path == ["search_path=pg_catalog, public, pg_temp"]
    with psycopg.connect(app_role, autocommit=True) as app:
        app.execute("INSERT INTO auth_user (username) VALUES ('ann')")
        app.execute("INSERT INTO dummy_sketch (user_id, title) VALUES (1, 'long title')")
    assert awards(conn) == {("scored", "1")}


def test_a_condition_that_names_the_schema_itself_is_taken_at_its_word(
        dsn: str, conn: psycopg.Connection[Any], make_role: Callable[..., str]) -> None:
    _plant(_attacker(make_role))
    apply(dsn, [badge("shouty", f"pg_catalog.lower(title) = '{HELLO}'")])
    conn.execute("INSERT INTO auth_user (username) VALUES ('ann')")
    conn.execute("INSERT INTO dummy_sketch (user_id, title) VALUES (1, 'HELLO'), (1, 'Nope')")
    assert awards(conn) == {("shouty", "1")}
    assert _hijacked_calls(conn) == 0


def _installed_functions(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'badged'")}


def test_nobody_may_attach_a_trigger_function_to_a_table_of_their_own(
        dsn: str, conn: psycopg.Connection[Any], make_role: Callable[..., str]) -> None:
    apply(dsn, SEED_BADGES)
    attacker_dsn = _attacker(make_role)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA badged TO {}").format(  # as the Django models and listen need
        sql.Identifier(str(conninfo.conninfo_to_dict(attacker_dsn)["user"]))))
    with psycopg.connect(attacker_dsn, autocommit=True) as attacker:
        attacker.execute("CREATE TABLE public.mine (user_id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"):
            attacker.execute(f"CREATE TRIGGER forged AFTER INSERT ON public.mine FOR EACH ROW "
                             f"EXECUTE FUNCTION {COLLECTOR}()")


def test_a_function_attached_elsewhere_awards_nothing_and_fails_no_write(
        dsn: str, conn: psycopg.Connection[Any]) -> None:
    """Even when someone who may (a superuser, the owner) attaches it to another table or event."""
    apply(dsn, SEED_BADGES)
    conn.execute("CREATE TABLE mine (user_id int)")
    conn.execute(f"CREATE TRIGGER forged AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION {COLLECTOR}()")
    conn.execute(f"CREATE TRIGGER forged AFTER DELETE ON dummy_sketch FOR EACH ROW EXECUTE FUNCTION {COLLECTOR}()")
    warnings: list[str] = []
    conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
    conn.execute("INSERT INTO auth_user (username) VALUES ('ann')")
    conn.execute("INSERT INTO dummy_sketch (user_id) SELECT 1 FROM generate_series(1, 4)")
    conn.execute("INSERT INTO mine SELECT 424242 FROM generate_series(1, 5)")
    conn.execute("DELETE FROM dummy_sketch WHERE id = 1")
    assert awards(conn) == set()
    assert warnings.count("badged: badged_public$dummy_sketch$insert serves AFTER INSERT FOR EACH ROW on "
                          "public.dummy_sketch, not AFTER INSERT FOR EACH ROW on public.mine: nothing awarded") == 5
    assert any("not AFTER DELETE FOR EACH ROW on public.dummy_sketch" in warning for warning in warnings)


def test_a_renamed_table_fails_no_write(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """Until badge.json follows the rename, its badges are not checked, with a warning; the writes go on."""
    apply(dsn, SEED_BADGES)
    conn.execute("ALTER TABLE dummy_sketch RENAME TO sketch")
    conn.execute("INSERT INTO auth_user (username) VALUES ('ann')")
    conn.execute("INSERT INTO sketch (user_id) SELECT 1 FROM generate_series(1, 5)")
    assert awards(conn) == set()


def test_execute_granted_by_hand_is_drift_and_is_revoked(
        dsn: str, conn: psycopg.Connection[Any], make_role: Callable[..., str]) -> None:
    apply(dsn, SEED_BADGES)
    helper = make_role()
    helper_role = conninfo.conninfo_to_dict(helper)["user"]
    conn.execute(f"GRANT EXECUTE ON FUNCTION {COLLECTOR}() TO PUBLIC")
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(
        sql.SQL(COLLECTOR), sql.Identifier(str(helper_role))))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA badged TO {}").format(sql.Identifier(str(helper_role))))
    passed_on = make_role()
    passed_on_role = conninfo.conninfo_to_dict(passed_on)["user"]
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {} WITH GRANT OPTION").format(
        sql.SQL(COLLECTOR), sql.Identifier(str(helper_role))))
    with psycopg.connect(helper, autocommit=True) as granter:  # it passes it on: a plain REVOKE would fail
        granter.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(
            sql.SQL(COLLECTOR), sql.Identifier(str(passed_on_role))))
    pending = plan(dsn, SEED_BADGES).plan
    (step,) = pending.steps
    granted = ", ".join(sorted(["PUBLIC", str(helper_role), str(passed_on_role)]))
    assert step.reason == f"drifted: EXECUTE granted to {granted}"
    apply(dsn, SEED_BADGES)
    assert plan(dsn, SEED_BADGES).plan.in_sync
    row = conn.execute(f"SELECT proacl::text[] FROM pg_proc WHERE oid = '{COLLECTOR}()'::regprocedure").fetchone()
    assert row is not None and all(not entry.startswith(("=", f"{helper_role}=", f"{passed_on_role}="))
                                   for entry in row[0])


@pytest.mark.parametrize("condition, function", [
    ("pg_sleep(5) IS NOT NULL", "pg_catalog.pg_sleep"),
    ("set_config('statement_timeout', '1', false) = '1'", "pg_catalog.set_config"),
    ("nextval('public.dummy_sketch_id_seq') > 0", "pg_catalog.nextval"),
    ("pg_terminate_backend(pg_backend_pid())", "pg_catalog.pg_terminate_backend"),
    ("lo_import('/etc/hostname') > 0", "pg_catalog.lo_import"),
    ("random() > 2", "pg_catalog.random"),
    ("pg_catalog.pg_advisory_lock(1) IS NULL", "pg_catalog.pg_advisory_lock"),
    ("exists (select from dummy_sketch where pg_sleep(1) is null)", "pg_catalog.pg_sleep"),
])
def test_a_condition_calling_a_volatile_function_is_refused(dsn: str, conn: psycopg.Connection[Any],
                                                            condition: str, function: str) -> None:
    with pytest.raises(DatabaseMismatch) as refused:
        apply(dsn, [badge("bad", condition)])
    (line,) = refused.value.lines()
    assert line.startswith("database: badge #0 ('bad'), field 'condition': calls ")
    assert f"calls {function}, which PostgreSQL marks VOLATILE" in line
    assert f"allow it with --allow-volatile {function}" in line
    assert _installed_functions(conn) == set(), "nothing applied"


def test_a_volatile_function_the_operator_allowed_is_accepted(dsn: str, conn: psycopg.Connection[Any]) -> None:
    allowed = Settings(allow_volatile=frozenset({"pg_catalog.clock_timestamp"}))
    items = [badge("late", "clock_timestamp() > '2000-01-01'::timestamptz")]
    apply(dsn, items, allowed)
    conn.execute("INSERT INTO auth_user (username) VALUES ('ann')")
    conn.execute("INSERT INTO dummy_sketch (user_id) VALUES (1)")
    assert awards(conn) == {("late", "1")}
    with pytest.raises(DatabaseMismatch, match="clock_timestamp, which PostgreSQL marks VOLATILE"):
        apply(dsn, items, Settings())


def _least_privileged(make_role: Callable[..., str], dsn: str) -> str:
    """The reconciler the README recommends: the owner of the watched tables (the migrations role), no superuser.

    (A role with only TRIGGER on them cannot: COMMENT ON TRIGGER, where badged keeps each
    trigger's digest, needs the table's owner.)
    """
    database = conninfo.conninfo_to_dict(dsn)["dbname"]
    return make_role(f"GRANT CREATE ON DATABASE {sql.Identifier(str(database)).as_string(None)} TO {{role}}",
                     "ALTER TABLE auth_user OWNER TO {role}", "ALTER TABLE dummy_sketch OWNER TO {role}")


def test_a_least_privileged_reconciler_installs_badges_that_award(
        dsn: str, conn: psycopg.Connection[Any], app_role: str, make_role: Callable[..., str]) -> None:
    reconciler = _least_privileged(make_role, dsn)
    with capture_logs() as logs:
        apply(reconciler, SEED_BADGES)
    assert not [entry for entry in logs.events if entry["event"] == "reconcile.superuser"]
    with psycopg.connect(app_role, autocommit=True) as app:
        app.execute("INSERT INTO auth_user (username) VALUES ('ann')")
        app.execute("INSERT INTO dummy_sketch (user_id) SELECT 1 FROM generate_series(1, 5)")
        app.execute("UPDATE dummy_sketch SET hit_views = 5000 WHERE id = 1")
    assert awards(conn) == {("collector", "1"), ("star", "1")}


def test_a_condition_cannot_read_what_its_reconciler_cannot(
        dsn: str, conn: psycopg.Connection[Any], app_role: str, make_role: Callable[..., str]) -> None:
    """With a superuser reconciler this condition read password hashes inside every app write."""
    reconciler = _least_privileged(make_role, dsn)
    apply(reconciler, [badge("hashes", "exists (select from pg_catalog.pg_authid where rolpassword is not null)")])
    with psycopg.connect(app_role, autocommit=True) as app:
        notices: list[str] = []
        app.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        app.execute("INSERT INTO auth_user (username) VALUES ('ann')")
        app.execute("INSERT INTO dummy_sketch (user_id) VALUES (1)")
    assert awards(conn) == set()
    assert any("permission denied for table pg_authid" in notice for notice in notices), notices


def test_a_superuser_reconciler_is_warned_about(dsn: str) -> None:
    with capture_logs() as logs:
        apply(dsn, SEED_BADGES)
    (warning,) = [entry for entry in logs.events if entry["event"] == "reconcile.superuser"]
    assert warning["level"] == "warning" and "owns the watched tables" in warning["why"]
