"""The naive oracle: one plain trigger per badge, evaluating its condition on its own for every row.

No held lookup, no shared scans, no CASE skipping, no locks: a badge's trigger fires on its event and, for an
update badge that is checked only when its columns change, when one of them changed value; it evaluates the
condition and, when true for a non-NULL user, records the award. A condition that fails at run time awards
nothing. Nothing here imports badged.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.differential.conditions import Generated

RESET = """
DROP SCHEMA IF EXISTS oracle CASCADE;
CREATE SCHEMA oracle;
CREATE TABLE oracle.award (badge text NOT NULL, user_id text NOT NULL, PRIMARY KEY (badge, user_id));
"""

_FUNCTION = """
CREATE FUNCTION oracle.{code}() RETURNS trigger LANGUAGE plpgsql AS $oracle$
DECLARE
    _oracle_earned boolean;
BEGIN
    IF {user} IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        _oracle_earned := {condition};
    EXCEPTION WHEN others THEN
        _oracle_earned := false;
    END;
    IF _oracle_earned THEN
        INSERT INTO oracle.award VALUES ('{code}', ({user})::text) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$oracle$
"""

_TRIGGER = "CREATE TRIGGER oracle_{code} AFTER {event} ON {table} FOR EACH ROW{when} EXECUTE FUNCTION oracle.{code}()"


def install(conn: psycopg.Connection[Any], badges: list[tuple[str, Generated]]) -> None:
    """Drop the previous case's oracle, then create one function and trigger per (code, badge)."""
    conn.execute(RESET)
    for code, badge in badges:
        row = "OLD" if badge.event == "delete" else "NEW"
        user = f"{row}.{badge.user_field}"
        conn.execute(_FUNCTION.format(code=code, user=user, condition=badge.oracle))
        when = ""
        if badge.changed_columns is not None:
            # "changed value" as stored: the text form tells 10 from 10.0 and compares json
            changed = " OR ".join(f"OLD.{c}::text IS DISTINCT FROM NEW.{c}::text" for c in badge.changed_columns)
            when = f" WHEN ({changed})"
        conn.execute(_TRIGGER.format(code=code, event=badge.event.upper(), table=badge.table, when=when))


def awards(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    return {(badge, user) for badge, user in conn.execute("SELECT badge, user_id FROM oracle.award")}
