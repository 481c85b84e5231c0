"""badged's own schema: the tables it keeps (awards, badge registry, consumer groups, rechecks, parked
events), their DDL, and the statements that write the registry. Pure.

The names are here so that a reader (``listen``, ``status``, the Django models) needs nothing
of the renderer to find them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from badged.marks import COMMENT_MARK
from badged.settings import Settings

#: awards: one row per (badge, user), stamped with the awarding transaction's id
AWARD_TABLE = "award"
#: the badge registry: names and tables for events, admin and status
BADGE_TABLE = "badge"
#: positions of durable listener groups
GROUP_TABLE = "consumer_group"
#: checks a trigger deferred (see ``locks``); ``badged run`` finishes them
RECHECK_TABLE = "recheck"
#: events a sink refused for good (a 4xx, a redirect), kept until replayed (see ``parking``)
PARKED_TABLE = "parked_event"
#: every table of badged's, in the order they are created
OWN_TABLES = (AWARD_TABLE, BADGE_TABLE, GROUP_TABLE, RECHECK_TABLE, PARKED_TABLE)


@dataclass(frozen=True)
class BadgeRow:
    """A row of badged's badge registry (names and tables for events, admin and status)."""

    code: str
    name: str
    trigger_table: str
    trigger_condition: str
    condition: str
    user_field: str


def schema_exists(settings: Settings) -> tuple[sql.SQL, tuple[str]]:
    """Does badged's schema exist (a statement and its parameters)."""
    return sql.SQL("SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %s)"), (settings.schema,)


def render_bootstrap(settings: Settings) -> dict[str, list[sql.Composable]]:
    """badged's own schema and tables, keyed by the object they create."""
    schema = sql.Identifier(settings.schema)
    award = sql.SQL("{}.{}").format(schema, sql.Identifier(AWARD_TABLE))
    badge = sql.SQL("{}.{}").format(schema, sql.Identifier(BADGE_TABLE))
    return {
        "schema": [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                schema, sql.Literal(f"{COMMENT_MARK}: awards and trigger functions")
            ),
        ],
        AWARD_TABLE: [
            sql.SQL(
                "CREATE TABLE {award} (\n"
                "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
                "    badge text NOT NULL,\n"
                "    user_id text NOT NULL,\n"
                "    awarded_at timestamptz NOT NULL DEFAULT now(),\n"
                "    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),\n"
                "    UNIQUE (badge, user_id)\n"
                ")"
            ).format(award=award),
            sql.SQL("CREATE INDEX ON {} (user_id)").format(award),
            # Listeners read awards in commit order: the awarding transaction's id lets them
            # tell "committed since my last read" exactly (pg_visible_in_snapshot).
            sql.SQL("CREATE INDEX ON {} (txid, id)").format(award),
        ],
        GROUP_TABLE: [
            sql.SQL(
                "CREATE TABLE {group} (\n"
                "    name text PRIMARY KEY,\n"
                "    snapshot pg_snapshot NOT NULL,\n"
                "    upto pg_snapshot,\n"
                "    after_txid xid8 NOT NULL DEFAULT '0',\n"
                "    after_id bigint NOT NULL DEFAULT 0,\n"
                "    min_id bigint NOT NULL DEFAULT 0,\n"
                "    delivered bigint NOT NULL DEFAULT 0,\n"
                "    updated_at timestamptz NOT NULL DEFAULT now()\n"
                ")"
            ).format(group=sql.SQL("{}.{}").format(schema, sql.Identifier(GROUP_TABLE))),
            sql.SQL("COMMENT ON TABLE {}.{} IS {}").format(
                schema, sql.Identifier(GROUP_TABLE),
                sql.Literal("positions of durable listener groups: every award visible in snapshot has been "
                            "delivered, plus those visible in upto up to (after_txid, after_id)"),
            ),
        ],
        RECHECK_TABLE: [
            sql.SQL(
                "CREATE TABLE {recheck} (\n"
                "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
                "    trigger_table text NOT NULL,\n"
                "    event text NOT NULL,\n"
                "    user_id text NOT NULL,\n"
                "    badges text[] NOT NULL,\n"
                "    new_row text,\n"
                "    old_row text,\n"
                "    created_at timestamptz NOT NULL DEFAULT now(),\n"
                "    attempts integer NOT NULL DEFAULT 0\n"
                ")"
            ).format(recheck=sql.SQL("{}.{}").format(schema, sql.Identifier(RECHECK_TABLE))),
            sql.SQL("COMMENT ON TABLE {}.{} IS {}").format(
                schema, sql.Identifier(RECHECK_TABLE),
                sql.Literal("badge checks a trigger could not decide alone (another transaction was checking the "
                            "same user, or an older snapshot); badged run finishes them"),
            ),
        ],
        PARKED_TABLE: [
            sql.SQL(
                "CREATE TABLE {parked} (\n"
                "    group_name text NOT NULL,\n"
                "    award_id bigint NOT NULL,\n"
                "    sink text NOT NULL,\n"
                "    status integer,\n"
                "    reason text NOT NULL,\n"
                "    response text,\n"
                "    attempts integer NOT NULL DEFAULT 1,\n"
                "    parked_at timestamptz NOT NULL DEFAULT now(),\n"
                "    replay_requested_at timestamptz,\n"
                "    PRIMARY KEY (group_name, award_id)\n"
                ")"
            ).format(parked=sql.Identifier(settings.schema, PARKED_TABLE)),
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                sql.Identifier(settings.schema, PARKED_TABLE),
                sql.Literal("badge-earned events a sink refused for good (a 4xx, a redirect); "
                            "`badged events replay` asks the running sink to send them again"),
            ),
        ],
        BADGE_TABLE: [
            sql.SQL(
                "CREATE TABLE {badge} (\n"
                "    code text PRIMARY KEY,\n"
                "    name text NOT NULL,\n"
                "    trigger_table text NOT NULL,\n"
                "    trigger_condition text NOT NULL,\n"
                "    condition text NOT NULL,\n"
                "    user_field text NOT NULL,\n"
                "    updated_at timestamptz NOT NULL DEFAULT now(),\n"
                "    removed_at timestamptz\n"
                ")"
            ).format(badge=badge),
        ],
    }


def upsert_badge_row(settings: Settings, row: BadgeRow) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table} (code, name, trigger_table, trigger_condition, condition, user_field)\n"
        "VALUES ({code}, {name}, {trigger_table}, {trigger_condition}, {condition}, {user_field})\n"
        "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, trigger_table = EXCLUDED.trigger_table,\n"
        "    trigger_condition = EXCLUDED.trigger_condition, condition = EXCLUDED.condition,\n"
        "    user_field = EXCLUDED.user_field, updated_at = pg_catalog.now(), removed_at = NULL"
    ).format(
        table=sql.SQL("{}.{}").format(sql.Identifier(settings.schema), sql.Identifier(BADGE_TABLE)),
        code=sql.Literal(row.code),
        name=sql.Literal(row.name),
        trigger_table=sql.Literal(row.trigger_table),
        trigger_condition=sql.Literal(row.trigger_condition),
        condition=sql.Literal(row.condition),
        user_field=sql.Literal(row.user_field),
    )


def retire_badge_row(settings: Settings, code: str) -> sql.Composed:
    return sql.SQL("UPDATE {}.{} SET removed_at = pg_catalog.now() WHERE code = {}").format(
        sql.Identifier(settings.schema), sql.Identifier(BADGE_TABLE), sql.Literal(code)
    )
