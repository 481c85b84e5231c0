"""Badge → the PostgreSQL objects that should exist for it, with their exact SQL.

Each badge becomes one plpgsql trigger function (in badged's schema) and one AFTER
ROW trigger on its table, both named ``<prefix><code>``. badged's own tables (the
awards and the badge registry) are rendered here too. Everything is composed with
``psycopg.sql`` so identifiers are always quoted and values always literals; the
condition comes from pglast's deparser (see ``condition``), never from raw text.

Pure: no database. Tables are passed in already resolved (see ``catalog.Table``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from badged.catalog import Table
from badged.condition import Event
from badged.settings import Settings
from badged.spec import Badge

AWARD_TABLE = "award"
BADGE_TABLE = "badge"
GROUP_TABLE = "consumer_group"
#: Stamped into every object comment so people (and badged) can tell what made it.
COMMENT_MARK = "managed by badged"


def text(composable: sql.Composable) -> str:
    """SQL as a string, without a connection (identifiers and literals are quoted)."""
    return composable.as_string(None)


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def comment_for(badge: str, digest: str) -> str:
    return f"{COMMENT_MARK}: badge={badge} sha256={digest}"


@dataclass(frozen=True)
class FunctionDef:
    """A trigger function badged wants to exist."""

    schema: str
    name: str
    badge: str
    body: str
    search_path: tuple[str, ...]

    @property
    def digest(self) -> str:
        return fingerprint(self.body, *self.search_path)

    @property
    def comment(self) -> str:
        return comment_for(self.badge, self.digest)

    @property
    def qualified(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    def create(self) -> list[sql.Composable]:
        tag = _dollar_tag(self.body)
        return [
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger\n"
                "LANGUAGE plpgsql SECURITY DEFINER\n"
                "SET search_path = {path}\n"
                "AS {tag}{body}{tag}"
            ).format(
                name=self.qualified,
                path=sql.SQL(", ").join(map(sql.Identifier, self.search_path)),
                tag=sql.SQL(tag),
                body=sql.SQL(self.body),
            ),
            sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(self.qualified, sql.Literal(self.comment)),
        ]

    def drop(self) -> list[sql.Composable]:
        return [sql.SQL("DROP FUNCTION {}()").format(self.qualified)]


@dataclass(frozen=True)
class TriggerDef:
    """A trigger badged wants to exist."""

    name: str
    table: Table
    badge: str
    event: Event
    columns: tuple[str, ...]
    when: str | None
    function: FunctionDef

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.table.schema, self.table.name, self.name)

    @property
    def definition(self) -> sql.Composed:
        event: sql.Composable = sql.SQL(self.event.value.upper())
        if self.columns:
            event = sql.SQL("{} OF {}").format(event, sql.SQL(", ").join(map(sql.Identifier, self.columns)))
        when = sql.SQL("\nWHEN ({})").format(sql.SQL(self.when)) if self.when else sql.SQL("")
        return sql.SQL(
            "CREATE TRIGGER {name} AFTER {event} ON {table}\nFOR EACH ROW{when}\nEXECUTE FUNCTION {function}()"
        ).format(
            name=sql.Identifier(self.name),
            event=event,
            table=self.table.qualified,
            when=when,
            function=self.function.qualified,
        )

    @property
    def digest(self) -> str:
        return fingerprint(text(self.definition))

    @property
    def comment(self) -> str:
        return comment_for(self.badge, self.digest)

    def create(self) -> list[sql.Composable]:
        return [
            self.definition,
            sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(
                sql.Identifier(self.name), self.table.qualified, sql.Literal(self.comment)
            ),
        ]

    def drop(self) -> list[sql.Composable]:
        return [drop_trigger(self.name, self.table)]


def drop_trigger(name: str, table: Table) -> sql.Composed:
    return sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), table.qualified)


@dataclass(frozen=True)
class BadgeRow:
    """A row of badged's badge registry (names and tables for events, admin and status)."""

    code: str
    name: str
    trigger_table: str
    trigger_condition: str
    condition: str
    user_field: str


@dataclass(frozen=True)
class Desired:
    """Everything badged wants to exist, rendered from badge.json."""

    functions: tuple[FunctionDef, ...]
    triggers: tuple[TriggerDef, ...]
    badges: tuple[BadgeRow, ...]


def render(badges: tuple[Badge, ...], tables: dict[str, Table], settings: Settings) -> Desired:
    """Render every badge; *tables* maps each badge's ``str(badge.table)`` to the resolved table."""
    functions, triggers, rows = [], [], []
    for badge in badges:
        table = tables[str(badge.table)]
        function = render_function(badge, table, settings)
        functions.append(function)
        triggers.append(render_trigger(badge, table, function, settings))
        rows.append(BadgeRow(
            badge.code, badge.name, table.display, badge.event.value, badge.condition.written, badge.user_field
        ))
    return Desired(tuple(functions), tuple(triggers), tuple(rows))


def object_name(settings: Settings, code: str) -> str:
    return settings.prefix + code


def render_function(badge: Badge, table: Table, settings: Settings) -> FunctionDef:
    row = badge.event.changed_row
    award = sql.SQL("{}.{}").format(sql.Identifier(settings.schema), sql.Identifier(AWARD_TABLE))
    body = _FUNCTION_BODY.format(
        user_value=sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(badge.user_field)),
        award=award,
        code=sql.Literal(badge.code),
        channel=sql.Literal(settings.channel),
        condition=sql.SQL(badge.condition.expression),
    )
    return FunctionDef(
        schema=settings.schema,
        name=object_name(settings, badge.code),
        badge=badge.code,
        body=text(body),
        search_path=("pg_catalog", table.schema, "pg_temp"),
    )


def render_trigger(badge: Badge, table: Table, function: FunctionDef, settings: Settings) -> TriggerDef:
    columns: tuple[str, ...] = ()
    when: str | None = None
    if badge.event is Event.UPDATE and badge.condition.new_row_only and badge.condition.new_columns:
        # The condition is a pure function of these columns of NEW: if none of them
        # changed, the function has nothing new to decide. UPDATE OF skips the trigger
        # for statements that do not set them; WHEN skips rows where they kept their
        # value (Django's save() sets every column).
        read = badge.condition.new_columns
        if not any(table.is_generated(column) for column in read):
            columns = read
        when = text(sql.SQL(" OR ").join(
            sql.SQL("OLD.{c} IS DISTINCT FROM NEW.{c}").format(c=sql.Identifier(column)) for column in read
        ))
    return TriggerDef(
        name=object_name(settings, badge.code),
        table=table,
        badge=badge.code,
        event=badge.event,
        columns=columns,
        when=when,
        function=function,
    )


def render_condition_check(badge: Badge, table: Table) -> sql.Composed:
    """A query PostgreSQL must be able to PREPARE if the condition fits the database.

    NEW and OLD become empty rows of the trigger table, so every table, column,
    function and operator is resolved, and ``NOT (...)`` makes a non-boolean
    condition an error. Nothing is executed: PREPARE only parses and analyses.
    """
    empty_row = sql.SQL("(SELECT * FROM {} WHERE false)").format(table.qualified)
    return sql.SQL('SELECT {check} FROM {row} AS "new", {row} AS "old"').format(
        check=sql.SQL(badge.condition.boolean_check), row=empty_row
    )


def _dollar_tag(body: str) -> str:
    tag, n = "$badged$", 0
    while tag in body:
        n += 1
        tag = f"$badged{n}$"
    return tag


_FUNCTION_BODY = sql.SQL("""
#variable_conflict use_column
DECLARE
    _badged_user text := ({user_value})::text;
    _badged_earned boolean;
    _badged_award bigint;
BEGIN
    IF _badged_user IS NULL THEN
        RETURN NULL;
    END IF;
    -- Cheap path first: a user earns each badge once.
    PERFORM 1 FROM {award} WHERE badge = {code} AND user_id = _badged_user;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    -- A failing condition must not fail the application's write. The guard only
    -- reads, so it never assigns a subtransaction id.
    BEGIN
        _badged_earned := {condition};
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'badged: condition of badge % failed on %.%: % (SQLSTATE %)',
            {code}, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        RETURN NULL;
    END;
    IF _badged_earned THEN
        INSERT INTO {award} (badge, user_id) VALUES ({code}, _badged_user)
        ON CONFLICT (badge, user_id) DO NOTHING
        RETURNING id INTO _badged_award;
        IF _badged_award IS NOT NULL THEN
            -- The doorbell only: listeners read the award table. Small by construction
            -- (NOTIFY payloads must stay under 8000 bytes).
            PERFORM pg_notify({channel}, json_build_object(
                'award_id', _badged_award,
                'badge', {code},
                'user_id', CASE WHEN octet_length(_badged_user) <= 1024 THEN _badged_user END
            )::text);
        END IF;
    END IF;
    RETURN NULL;
END
""")


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
        "    user_field = EXCLUDED.user_field, updated_at = now(), removed_at = NULL"
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
    return sql.SQL("UPDATE {}.{} SET removed_at = now() WHERE code = {}").format(
        sql.Identifier(settings.schema), sql.Identifier(BADGE_TABLE), sql.Literal(code)
    )
