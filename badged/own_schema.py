"""badged's own schema: the tables it keeps (awards, badge registry, consumer groups, rechecks, parked
events), their DDL, and the statements that write the registry. Pure.

The names are here so that a reader (``listen``, ``status``, the Django models) needs nothing
of the renderer to find them.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from badged.marks import COMMENT_MARK, Statement
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
#: awards with the user's id also typed as user tables' keys are (bigint, uuid), indexed, for joins: the Django
#: ORM's ``award.user`` and ``User.objects.annotate(Count("awards"))``, or any SQL joining awards to users
AWARD_USER_VIEW = "award_user"
#: the stored text as a bigint when it is one (CASE: never a cast error), as uuid when it is one; the view and
#: the indexes use the very same expression, so a join on the view's column uses the index
_AS_INTEGER = ("CASE WHEN user_id OPERATOR(pg_catalog.~) '^-?[0-9]{1,18}$' OR (user_id OPERATOR(pg_catalog.~) "
               "'^-?[0-9]{19}$' AND user_id::pg_catalog.numeric BETWEEN -9223372036854775808 AND 9223372036854775807) "
               "THEN user_id::pg_catalog.int8 END")
_AS_UUID = ("CASE WHEN user_id OPERATOR(pg_catalog.~*) "
            "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN user_id::pg_catalog.uuid END")


@dataclass(frozen=True)
class BadgeRow:
    """A row of badged's badge registry (names and tables for events, admin and status)."""

    code: str
    name: str
    trigger_table: str
    trigger_condition: str
    condition: str
    user_field: str


def tables_exist(settings: Settings, *tables: str) -> tuple[sql.Composed, tuple[str, ...]]:
    """Whether each of badged's *tables* exists (one boolean column each): a statement and its parameters."""
    checks = sql.SQL(", ").join(sql.SQL("pg_catalog.to_regclass(%s) IS NOT NULL") for _ in tables)
    return sql.SQL("SELECT {}").format(checks), tuple(f"{settings.schema}.{table}" for table in tables)


#: each table's columns and constraints (its CREATE TABLE's body) and, where it helps a reader of the catalog, its
#: COMMENT; the award table also has indexes (``render_bootstrap``)
_TABLES: dict[str, tuple[tuple[str, ...], str | None]] = {
    AWARD_TABLE: ((
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "badge text NOT NULL",
        "user_id text NOT NULL",
        "awarded_at timestamptz NOT NULL DEFAULT now()",
        "txid xid8 NOT NULL DEFAULT pg_current_xact_id()",
        "UNIQUE (badge, user_id)",
    ), None),
    GROUP_TABLE: ((
        "name text PRIMARY KEY",
        "snapshot pg_snapshot NOT NULL",
        "upto pg_snapshot",
        "after_txid xid8 NOT NULL DEFAULT '0'",
        "after_id bigint NOT NULL DEFAULT 0",
        "min_id bigint NOT NULL DEFAULT 0",
        "delivered bigint NOT NULL DEFAULT 0",
        "updated_at timestamptz NOT NULL DEFAULT now()",
    ), "positions of durable listener groups: every award visible in snapshot has been delivered, plus those "
       "visible in upto up to (after_txid, after_id)"),
    RECHECK_TABLE: ((
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "trigger_table text NOT NULL",
        "event text NOT NULL",
        "user_id text NOT NULL",
        "badges text[] NOT NULL",
        "new_row text",
        "old_row text",
        "created_at timestamptz NOT NULL DEFAULT now()",
        "attempts integer NOT NULL DEFAULT 0",
    ), "badge checks a trigger could not decide alone (another transaction was checking the same user, or an "
       "older snapshot); badged run finishes them"),
    PARKED_TABLE: ((
        "group_name text NOT NULL",
        "award_id bigint NOT NULL",
        "sink text NOT NULL",
        "status integer",
        "reason text NOT NULL",
        "response text",
        "attempts integer NOT NULL DEFAULT 1",
        "parked_at timestamptz NOT NULL DEFAULT now()",
        "replay_requested_at timestamptz",
        "PRIMARY KEY (group_name, award_id)",
    ), "badge-earned events a sink refused for good (a 4xx, a redirect); `badged events replay` asks the running "
       "sink to send them again"),
    BADGE_TABLE: ((
        "code text PRIMARY KEY",
        "name text NOT NULL",
        "trigger_table text NOT NULL",
        "trigger_condition text NOT NULL",
        "condition text NOT NULL",
        "user_field text NOT NULL",
        "updated_at timestamptz NOT NULL DEFAULT now()",
        "removed_at timestamptz",
    ), None),
}


def render_bootstrap(settings: Settings) -> dict[str, list[Statement]]:
    """badged's own schema and tables, keyed by the object they create."""
    schema = sql.Identifier(settings.schema)
    award = sql.Identifier(settings.schema, AWARD_TABLE)
    statements: dict[str, list[Statement]] = {
        "schema": [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
            sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                schema, sql.Literal(f"{COMMENT_MARK}: awards and trigger functions")
            ),
        ],
    }
    for table, (columns, comment) in _TABLES.items():
        statements[table] = _create_table(sql.Identifier(settings.schema, table), columns, comment)
    statements[AWARD_TABLE] += [
        sql.SQL("CREATE INDEX ON {} (user_id)").format(award),
        # Listeners read awards in commit order: the awarding transaction's id lets them
        # tell "committed since my last read" exactly (pg_visible_in_snapshot).
        sql.SQL("CREATE INDEX ON {} (txid, id)").format(award),
    ]
    return statements


def render_award_user_view(settings: Settings) -> list[Statement]:
    """``AWARD_USER_VIEW`` and the indexes that make joins on its typed user columns fast."""
    award = sql.Identifier(settings.schema, AWARD_TABLE)
    view = sql.Identifier(settings.schema, AWARD_USER_VIEW)
    # the expressions are constants of this module, never input: they are SQL as written
    as_integer, as_uuid = sql.SQL(_AS_INTEGER), sql.SQL(_AS_UUID)
    return [
        sql.SQL("CREATE INDEX IF NOT EXISTS award_user_integer ON {} (({}))").format(award, as_integer),
        sql.SQL("CREATE INDEX IF NOT EXISTS award_user_uuid ON {} (({}))").format(award, as_uuid),
        sql.SQL(
            "CREATE VIEW {view} AS SELECT id, badge, user_id, user_id AS user_key, awarded_at,\n"
            "    {as_integer} AS user_integer,\n    {as_uuid} AS user_uuid\nFROM {award}"
        ).format(view=view, as_integer=as_integer, as_uuid=as_uuid, award=award),
        sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(
            f"{COMMENT_MARK}: awards with user_id also as bigint (user_integer) and uuid (user_uuid), indexed, "
            "for joins to a users table")),
    ]


def _create_table(name: sql.Identifier, columns: tuple[str, ...], comment: str | None) -> list[Statement]:
    # the column definitions are constants of this module, never input: they are SQL as written
    body = sql.SQL(",\n").join(sql.SQL("    " + column) for column in columns)
    create: list[Statement] = [sql.SQL("CREATE TABLE {} (\n{}\n)").format(name, body)]
    if comment is not None:
        create.append(sql.SQL("COMMENT ON TABLE {} IS {}").format(name, sql.Literal(comment)))
    return create


def upsert_badge_row(settings: Settings, row: BadgeRow) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {table} (code, name, trigger_table, trigger_condition, condition, user_field)\n"
        "VALUES ({code}, {name}, {trigger_table}, {trigger_condition}, {condition}, {user_field})\n"
        "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, trigger_table = EXCLUDED.trigger_table,\n"
        "    trigger_condition = EXCLUDED.trigger_condition, condition = EXCLUDED.condition,\n"
        "    user_field = EXCLUDED.user_field, updated_at = pg_catalog.now(), removed_at = NULL"
    ).format(
        table=sql.Identifier(settings.schema, BADGE_TABLE),
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
