"""The original django-pg-badges 0.1, as its ``create_badge_triggers`` installs it, without Django.

``fixtures/pg_badges_trigger.sql`` is its ``trigger.sql`` verbatim (MIT, Yohann Gabory); the table is what its
migration ``0001_initial`` creates; ``original_cleanup`` is its ``drop_existing_triggers``. Its template
pastes the badge's fields into SQL, so the badges here are ones it can run: ``NEW.hit_views`` (its bare
``hit_views`` failed at run time, aborting the application's write).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

TEMPLATE = (Path(__file__).parent / "fixtures" / "pg_badges_trigger.sql").read_text()

#: its table, as Django's migration 0001_initial of app "badges" creates it on PostgreSQL
CREATE_TABLE = """
CREATE TABLE badges_badge (
    id serial NOT NULL PRIMARY KEY,
    name text NOT NULL,
    code varchar(100) NOT NULL,
    user_id integer NOT NULL REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (user_id, name)
)
"""

#: its drop_existing_triggers' query, verbatim: LIKE 'badge_%' also matches badged_…
DROP_TEMPLATE = """
SELECT proname, relname FROM
    (pg_trigger JOIN pg_class ON tgrelid=pg_class.oid)
JOIN pg_proc ON (tgfoid=pg_proc.oid) WHERE proname LIKE 'badge_%';
"""

#: the seed's badges, as the original could run them
ORIGINAL_BADGES: list[dict[str, str]] = [
    {"name": "Pionner", "code": "pionner", "condition": "age(NEW.date_joined) > interval '1 year'",
     "trigger_condition": "update", "trigger_table": "auth_user", "user_field": "id"},
    {"name": "Collector", "code": "collector",
     "condition": "count(id) >= 5 from dummy_sketch where user_id = NEW.user_id",
     "trigger_condition": "insert", "trigger_table": "dummy_sketch", "user_field": "user_id"},
    {"name": "Star", "code": "star", "condition": "NEW.hit_views > 1000", "trigger_condition": "update",
     "trigger_table": "dummy_sketch", "user_field": "user_id"},
]


def install_original(conn: psycopg.Connection[Any], badges: list[dict[str, str]] = ORIGINAL_BADGES) -> None:
    """Its migration, then its create_badge_triggers."""
    conn.execute(CREATE_TABLE)
    create_badge_triggers(conn, badges)


def create_badge_triggers(conn: psycopg.Connection[Any], badges: list[dict[str, str]]) -> None:
    """Its create_badge_triggers: drop every trigger its LIKE matches, then render the template per badge."""
    original_cleanup(conn)
    for item in badges:
        conn.execute(TEMPLATE.format(**item).encode())


def original_cleanup(conn: psycopg.Connection[Any]) -> list[str]:
    """Its drop_existing_triggers: every trigger whose function matches LIKE 'badge_%'; returns what it dropped."""
    dropped = []
    for proname, relname in conn.execute(DROP_TEMPLATE).fetchall():
        conn.execute(f"DROP TRIGGER {proname} ON {relname}".encode())
        dropped.append(proname)
    return dropped


def original_awards(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    return {(code, str(user)) for code, user in conn.execute("SELECT code, user_id FROM badges_badge").fetchall()}
