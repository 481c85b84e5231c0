"""badged.contrib.django in a real Django project (tests/django_project), run as subprocesses.

Django's settings can be configured once per process and every test has a database of its own,
so each ``manage.py`` call is a subprocess. The project is Django's own auth (``migrate``) plus a
managed ``Sketch`` model over ``dummy_sketch``, so it starts from an *empty* database: the seed's
``auth_user`` would clash with Django's auth migrations. ``migrate`` runs once per module into a
template database; each test gets a copy (``CREATE DATABASE ... TEMPLATE``), which takes
milliseconds instead of a migrate's seconds.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from badged.output import plan_text
from tests.conftest import SEED_BADGES
from tests.helpers import SEED_OBJECTS, apply, object_oids, plan

pytest.importorskip("django")

PROJECT = Path(__file__).resolve().parent / "django_project"
ROOT = PROJECT.parent.parent


def manage(*args: str, dsn: str, badges: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROJECT / "manage.py"), *args], env=project_env(dsn, badges),
                          cwd=PROJECT, capture_output=True, text=True, timeout=timeout, check=False)


def project_env(dsn: str, badges: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADGED_", "DJANGO_"))}
    env.update(BADGED_TEST_DJANGO_DSN=dsn, PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    if badges is not None:
        env["BADGED_TEST_BADGES_FILE"] = str(badges)
    return env


@pytest.fixture(scope="module")
def migrated_template(admin_dsn: str) -> Iterator[str]:
    """A database holding the test project's migrated schema (auth_user, dummy_sketch, ...), used as a template."""
    name = f"badged_django_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        done = manage("migrate", "--no-input", "-v", "0", dsn=conninfo.make_conninfo(admin_dsn, dbname=name))
        assert done.returncode == 0, done.stderr
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def django_dsn(admin_dsn: str, migrated_template: str) -> Iterator[str]:
    """A fresh copy of the migrated database."""
    name = f"badged_django_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                       sql.Identifier(migrated_template)))
    try:
        yield conninfo.make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def badge_file(tmp_path: Path) -> Path:
    path = tmp_path / "badge.json"
    path.write_text(json.dumps(SEED_BADGES, indent=2))
    return path


def badged_triggers(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tgname FROM pg_trigger WHERE starts_with(tgname::text, 'badged_')").fetchall()
    return {name for (name,) in rows}


def create_user(conn: psycopg.Connection[Any], username: str) -> int:
    """A row of Django's auth_user written by SQL (another program, not the ORM)."""
    row = conn.execute(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
        " is_active, date_joined) VALUES ('!', false, %s, '', '', '', false, true, now()) RETURNING id",
        (username,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_create_badge_triggers_plans_applies_and_then_has_nothing_to_do(django_dsn: str, badge_file: Path) -> None:
    dry = manage("create_badge_triggers", "--dry-run", dsn=django_dsn, badges=badge_file)
    assert dry.returncode == 0, dry.stderr
    expected = plan(django_dsn, SEED_BADGES)  # what `badged plan` prints, computed by the library
    assert dry.stdout == plan_text(expected.plan, badges=3) + "\n"
    assert dry.stdout.startswith("Plan: ") and "CREATE TRIGGER" in dry.stdout
    assert badged_triggers(django_dsn) == set()
    with psycopg.connect(django_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('badged')").fetchone() == (None,)

    check = manage("create_badge_triggers", "--check", dsn=django_dsn, badges=badge_file)
    assert check.returncode == 1 and check.stdout.startswith("Plan: ")

    first = manage("create_badge_triggers", dsn=django_dsn, badges=badge_file)
    assert first.returncode == 0, first.stderr
    assert "Applied: 15 to create, 0 to replace, 0 to drop" in first.stdout, first.stdout
    assert badged_triggers(django_dsn) == set(SEED_OBJECTS.values())
    with psycopg.connect(django_dsn) as conn:
        oids = object_oids(conn)

    second = manage("create_badge_triggers", dsn=django_dsn, badges=badge_file)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "No changes. The database matches badge.json (3 badges).\n"
    assert second.stderr == ""
    with psycopg.connect(django_dsn) as conn:
        assert object_oids(conn) == oids


def test_create_badge_triggers_errors_are_one_clear_line(django_dsn: str, tmp_path: Path) -> None:
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps([{**SEED_BADGES[1], "trigger_tabel": "dummy_sketch"}]))
    done = manage("create_badge_triggers", dsn=django_dsn, badges=typo)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"CommandError: {typo}: badge #0 ('collector'), field 'trigger_tabel': unknown field; "
        "did you mean 'trigger_table'?"
    ]

    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{**SEED_BADGES[1], "trigger_table": "dummy_sketches"}]))
    done = manage("create_badge_triggers", dsn=django_dsn, badges=missing)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "CommandError: database: badge #0 ('collector'), field 'trigger_table': table dummy_sketches does not "
        "exist (or is not on the search_path)"
    ]
    assert badged_triggers(django_dsn) == set()

    # unreachable database: the message names the problem, never the password
    unreachable = "host=/nonexistent-socket-dir dbname=app user=app password=s3cret-Pa55"
    done = manage("create_badge_triggers", dsn=unreachable, badges=tmp_path / "typo.json")
    assert done.returncode == 1 and "trigger_tabel" in done.stderr  # badge.json is checked before connecting
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SEED_BADGES))
    done = manage("create_badge_triggers", dsn=unreachable, badges=good)
    assert done.returncode == 1
    assert done.stderr.startswith("CommandError: cannot connect to the database: ")
    assert "s3cret-Pa55" not in done.stderr and "Traceback" not in done.stderr


ORM_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
from badged.contrib.django.models import Award, Badge
from sketches.models import Sketch

User = get_user_model()
alice = User.objects.create_user("alice")
bob = User.objects.create_user("bob")
sketch = Sketch.objects.create(user=alice, title="cat")
sketch.hit_views = 2000
sketch.save()
for n in range(5):
    Sketch.objects.create(user=alice, title=f"dog {n}")
admin = User.objects.create_superuser("root", "root@example.com", "pw")
client = Client()
client.force_login(admin)
award = Award.objects.for_user(alice).get(badge="star")
pages = {name: client.get(path) for name, path in
         (("award_list", "/admin/badged/award/"), ("badge_list", "/admin/badged/badge/"),
          ("award_view", f"/admin/badged/award/{award.pk}/change/"), ("award_add", "/admin/badged/award/add/"))}
print(json.dumps({
    "awards": [a.badge_id for a in alice.awards],
    "names": [a.badge.name for a in alice.awards.select_related("badge")],
    "bob": list(bob.awards.values_list("badge", flat=True)),
    "for_user_id": Award.objects.for_user(alice.pk).count(),
    "award_user": award.user.username,
    "star_holders": list(Badge.objects.get(code="star").awards.values_list("user_key", flat=True)),
    "active": list(Badge.objects.active().values_list("code", flat=True)),
    "alice_id": str(alice.pk),
    "status": {name: page.status_code for name, page in pages.items()},
    "award_list": pages["award_list"].content.decode(),
    "badge_list": pages["badge_list"].content.decode(),
}))
"""


def test_orm_reads_awards_and_admin_lists_them(django_dsn: str, badge_file: Path) -> None:
    apply(django_dsn, SEED_BADGES)
    done = manage("shell", "-c", ORM_SCRIPT, dsn=django_dsn, badges=badge_file)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["awards"] == ["star", "collector"]
    assert result["names"] == ["Star", "Collector"]
    assert result["bob"] == []
    assert result["for_user_id"] == 2
    assert result["award_user"] == "alice"
    assert result["star_holders"] == [result["alice_id"]]
    assert result["active"] == ["collector", "pionner", "star"]
    assert result["status"] == {"award_list": 200, "badge_list": 200, "award_view": 200, "award_add": 403}
    assert "Collector" in result["award_list"] and "2 awards" in result["award_list"]
    assert "Pionner" in result["badge_list"] and "3 badges" in result["badge_list"]


class LineReader:
    """Lines of a subprocess's stdout, awaited with a timeout (a thread feeds a queue)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self._lines.put(line)
        self._lines.put(None)

    def next_json(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("listen_badges exited early")
            if line.startswith("{"):
                return dict(json.loads(line))
        raise AssertionError(f"no badge_earned line within {timeout} s")

    def rest(self) -> list[str]:
        self._thread.join(timeout=5)
        lines = []
        while (line := self._lines.get_nowait()) is not None:
            lines.append(line)
        return lines


def test_listen_badges_sends_badge_earned_per_award(django_dsn: str, badge_file: Path) -> None:
    apply(django_dsn, SEED_BADGES)
    with psycopg.connect(django_dsn, autocommit=True) as conn:
        alice = create_user(conn, "alice")
        sketch = conn.execute("INSERT INTO dummy_sketch (user_id, title, hit_views) VALUES (%s, 'cat', 0) "
                              "RETURNING id", (alice,)).fetchone()
        assert sketch is not None
        conn.execute("UPDATE dummy_sketch SET hit_views = 5000 WHERE id = %s", sketch)  # star, before listening

        listener = subprocess.Popen(
            [sys.executable, str(PROJECT / "manage.py"), "listen_badges", "--since", "0"],
            env=project_env(django_dsn, badge_file), cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = LineReader(listener)
            first = lines.next_json()  # caught up from the award table
            assert {k: first[k] for k in ("sender", "badge", "badge_name", "user_id")} == {
                "sender": "badged.Award", "badge": "star", "badge_name": "Star", "user_id": str(alice)}

            conn.execute("UPDATE auth_user SET date_joined = now() - interval '2 years' WHERE id = %s", (alice,))
            second = lines.next_json()  # live: NOTIFY rang the doorbell
            assert (second["badge"], second["user_id"]) == ("pionner", str(alice))
            assert second["award_id"] > first["award_id"]

            listener.send_signal(signal.SIGTERM)
            assert listener.wait(timeout=10) == 0
            assert lines.rest() == []  # each award once
            assert listener.stderr is not None
            assert "Traceback" not in listener.stderr.read()
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
            for stream in (listener.stdout, listener.stderr):
                if stream is not None:
                    stream.close()


@pytest.mark.parametrize("users", ["integer", "uuid", "text"])
def test_django_test_runner_with_badged(admin_dsn: str, badge_file: Path, users: str) -> None:
    """``manage.py test sketches`` (tests/django_project/sketches/tests.py): badged in Django's own test cases,
    the user relation, templates; with Django's integer user keys, a UUID and a text primary key."""
    name = f"badged_django_runner_{uuid.uuid4().hex[:10]}"
    dsn = conninfo.make_conninfo(admin_dsn, dbname=name)  # the runner creates and drops test_<name>
    env = project_env(dsn, badge_file)
    if users != "integer":  # no auth_user: the seed's badges of dummy_sketch only
        badge_file.write_text(json.dumps(SEED_BADGES[1:]))
        env["BADGED_TEST_USERS"] = users
    done = subprocess.run([sys.executable, str(PROJECT / "manage.py"), "test", "sketches", "--no-input", "-v", "2"],
                          env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Ran 9 tests" in done.stderr and "OK" in done.stderr, done.stderr[-2000:]


def test_migrate_reconciles_when_asked(django_dsn: str, badge_file: Path) -> None:
    """BADGED_RECONCILE_ON_MIGRATE: ``manage.py migrate`` is the only deploy step."""
    env = {"BADGED_TEST_POST_MIGRATE": "1"}
    done = subprocess.run([sys.executable, str(PROJECT / "manage.py"), "migrate", "--no-input"],
                          env={**project_env(django_dsn, badge_file), **env}, cwd=PROJECT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert badged_triggers(django_dsn) == set(SEED_OBJECTS.values())
    assert "Applied: 15 to create" in done.stdout, done.stdout


def test_pytest_django_fixture(admin_dsn: str, badge_file: Path) -> None:
    """tests/django_project/pytest_suite under pytest-django, with ``badged_triggers`` from its conftest."""
    pytest.importorskip("pytest_django", reason="pytest-django is not installed (the test extras have it)")
    name = f"badged_django_pytest_{uuid.uuid4().hex[:10]}"
    env = project_env(conninfo.make_conninfo(admin_dsn, dbname=name), badge_file)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "pytest_suite"],
                          env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout, done.stdout[-2000:]
