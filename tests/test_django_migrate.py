"""From django-pg-badges to badged in a Django project, with the original package itself.

The original 0.1 is fetched from PyPI as its sdist (``pip download``) and its one incompatibility with
Django >= 2.0 patched (``ForeignKey`` without ``on_delete``); the test project lists it before badged in
INSTALLED_APPS, as a project that appends badged does. Its migration creates ``badges_badge``, its own
``create_badge_triggers`` installs its triggers, and writes made by SQL (another program) earn awards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import apply, awards, triggers
from tests.pg_badges_original import ORIGINAL_BADGES, original_awards
from tests.test_django import PROJECT, create_user, project_env
from tests.test_migrate_from import _drain, original_objects

pytest.importorskip("django")

ORIGINAL_VERSION = "0.1"


@pytest.fixture(scope="session")
def original_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the original's package ``badges``, patched for Django >= 2.0."""
    folder = tmp_path_factory.mktemp("django-pg-badges")
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
         "-q", "-d", str(folder), f"django-pg-badges=={ORIGINAL_VERSION}"],
        capture_output=True, text=True, timeout=120, check=False)
    sdists = list(folder.glob("django-pg-badges-*.tar.gz")) + list(folder.glob("django_pg_badges-*.tar.gz"))
    if fetched.returncode != 0 or not sdists:
        pytest.skip(f"cannot fetch django-pg-badges {ORIGINAL_VERSION} from the package index: "
                    f"{fetched.stderr.strip()[-300:]}")
    with tarfile.open(sdists[0]) as archive:
        archive.extractall(folder, filter="data")
    (package,) = folder.glob("django-pg-badges-*/badges")
    models = package / "models.py"
    original = models.read_text()
    patched = original.replace("models.ForeignKey(settings.AUTH_USER_MODEL)",
                               "models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)")
    assert patched != original, "the original's models.py is not the 0.1 this test patches"
    models.write_text(patched)
    return package.parent


def manage_with(original: Path | None, *args: str, dsn: str, badges: Path) -> subprocess.CompletedProcess[str]:
    env = project_env(dsn, badges)
    if original is not None:
        env["BADGED_TEST_ORIGINAL"] = str(original)
    return subprocess.run([sys.executable, str(PROJECT / "manage.py"), *args], env=env, cwd=PROJECT,
                          capture_output=True, text=True, timeout=120, check=False)


def earn(conn: psycopg.Connection[Any], prefix: str) -> None:
    """Writes made by SQL: one user collects 5 sketches, one has a star, one joined long ago."""
    collector, star, pioneer = (create_user(conn, f"{prefix}-{kind}") for kind in ("c", "s", "p"))
    for _ in range(5):
        conn.execute("INSERT INTO dummy_sketch (user_id, title, hit_views) VALUES (%s, '', 0)", (collector,))
    conn.execute("INSERT INTO dummy_sketch (user_id, title, hit_views) VALUES (%s, '', 0)", (star,))
    conn.execute("UPDATE dummy_sketch SET hit_views = 5000 WHERE user_id = %s", (star,))
    conn.execute("UPDATE auth_user SET date_joined = now() - interval '2 years' WHERE id = %s", (pioneer,))


def test_from_django_pg_badges_in_one_command(original_package: Path, empty_dsn: str, tmp_path: Path) -> None:
    project_dsn = empty_dsn  # Django's migrate fills it
    badge_file = tmp_path / "badge.json"
    badge_file.write_text(json.dumps(ORIGINAL_BADGES, indent=2))

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return manage_with(original_package, *args, dsn=project_dsn, badges=badge_file)

    done = manage("migrate", "--no-input", "-v", "0")
    assert done.returncode == 0, done.stderr
    done = manage("create_badge_triggers")  # listed first, the original owns the name: its command runs
    assert done.returncode == 0, done.stderr
    with psycopg.connect(project_dsn, autocommit=True) as conn:
        assert original_objects(conn) == {f"{kind} badge_{code}" for kind in ("function", "trigger")
                                          for code in ("pionner", "collector", "star")}
        earn(conn, "before")
        apply(project_dsn, ORIGINAL_BADGES)  # badged added beside it
        ours = triggers(project_dsn)
        assert len(ours) == 3
        assert _drain(project_dsn, "app") == []  # a listener group, positioned before what follows
        earn(conn, "both")  # both sets of triggers fire: awards in two tables
        assert len(_drain(project_dsn, "app")) == 3  # badged's three, delivered as they happen
        old = original_awards(conn)
        both = {str(user) for (user,) in conn.execute("SELECT id FROM auth_user WHERE username LIKE 'both-%'")}
        assert len(old) == 6 and awards(conn) == {award for award in old if award[1] in both}

    check = manage("check", "--database", "default")
    assert check.returncode == 0, check.stderr
    for warning in ("badged.W002", "badged.W003", "badged.W004"):
        assert warning in check.stderr, check.stderr

    dry = manage("badged_migrate_from", "django-pg-badges", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    print(dry.stdout)  # the closing note shows it (pytest -s)
    assert "+ import 3 awards as history, never delivered as events: collector 1, pionner 1, star 1" in dry.stdout
    assert "3 already in badged's award table, kept as they are" in dry.stdout
    with psycopg.connect(project_dsn, autocommit=True) as conn:
        assert len(original_objects(conn)) == 6

    done = manage("badged_migrate_from", "django-pg-badges")
    assert done.returncode == 0, done.stderr
    assert "Migrated in one transaction" in done.stdout and "3 awards imported" in done.stdout, done.stdout
    with psycopg.connect(project_dsn, autocommit=True) as conn:
        assert awards(conn) == old  # every old award, once
        assert conn.execute("SELECT count(*) FROM badged.award").fetchone() == (len(old),)
        assert original_objects(conn) == set()
        assert triggers(project_dsn) == ours
        assert _drain(project_dsn, "app") == [] and _drain(project_dsn, "new") == []  # no event for history
        earn(conn, "after")  # badged's triggers alone
        assert len(awards(conn)) == len(old) + 3 and original_awards(conn) == old
        assert len(_drain(project_dsn, "app")) == 3

    again = manage("badged_migrate_from", "django-pg-badges")
    assert again.returncode == 0 and again.stdout.startswith("Nothing to migrate"), again.stdout + again.stderr
    check = manage("check", "--database", "default")
    assert "badged.W004" not in check.stderr and "badged.W002" in check.stderr

    without = manage_with(None, "check", "--database", "default", dsn=project_dsn, badges=badge_file)
    assert without.returncode == 0 and "badged.W" not in without.stderr, without.stderr
