"""Badges → the PostgreSQL objects that should exist for them, with their exact SQL.

The badges of one table and one kind of write share **one** AFTER ROW trigger and
**one** plpgsql function (in badged's schema), named ``<prefix><schema>$<table>$<kind>``
(codes cannot contain ``$``, so these names never meet a badge's). What the function
does for each written row is compiled by ``function_body``.

Update badges whose condition reads only columns of NEW (``hit_views > 1000``) get a
trigger of their own kind (``update_of``) with ``UPDATE OF <columns>`` and ``WHEN``, so
writes that change none of those columns never call a function at all.

badged's own tables (the awards, the badge registry, consumer groups and rechecks) are
rendered here too. Everything is composed with ``psycopg.sql``, so identifiers are
always quoted and values always literals; conditions come from pglast's deparser (see
``condition``), never from raw text.

Pure: no database. Tables are passed in already resolved (see ``catalog.Table``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from psycopg import sql

from badged.awarding import AWARD_TABLE
from badged.catalog import Column, Table
from badged.condition import Event
from badged.function_body import BodyContext, changed, compile_body, function_search_path
from badged.locks import RECHECK_TABLE
from badged.routines import UNKNOWN, Routines
from badged.settings import Settings
from badged.spec import MAX_IDENTIFIER_BYTES, Badge

BADGE_TABLE = "badge"
GROUP_TABLE = "consumer_group"
#: events a sink refused for good (a 4xx, a redirect), kept until replayed (see ``parking``)
PARKED_TABLE = "parked_event"
#: Stamped into every object comment so people (and badged) can tell what made it.
COMMENT_MARK = "managed by badged"
#: The trigger kinds: the event, and for updates whether the trigger filters on columns.
UPDATE_OF = "update_of"


def text(composable: sql.Composable) -> str:
    """SQL as a string, without a connection (identifiers and literals are quoted)."""
    return composable.as_string(None)


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def comment_for(badges: tuple[str, ...], digest: str) -> str:
    served = f"badges={','.join(badges)} " if badges else ""
    return f"{COMMENT_MARK}: {served}sha256={digest}"


def parse_comment(comment: str | None) -> tuple[tuple[str, ...], str] | None:
    """(badges, digest) from a comment badged wrote (also the one-badge form of earlier versions)."""
    if not comment or not comment.startswith(f"{COMMENT_MARK}: "):
        return None
    fields = dict(part.partition("=")[::2] for part in comment[len(COMMENT_MARK) + 2:].split(" "))
    codes = fields.get("badges", fields.get("badge", ""))
    return tuple(code for code in codes.split(",") if code), fields.get("sha256", "")


@dataclass(frozen=True)
class FunctionDef:
    """A trigger function badged wants to exist (one per table and trigger kind)."""

    schema: str
    name: str
    badges: tuple[str, ...]
    body: str
    search_path: tuple[str, ...]
    #: queries of the body that PostgreSQL must be able to PREPARE (with NEW/OLD as empty rows):
    #: badged rewrites the conditions in them (shared scans), so they are checked like the conditions
    probes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def digest(self) -> str:
        return fingerprint(self.body, *self.search_path)

    @property
    def comment(self) -> str:
        return comment_for(self.badges, self.digest)

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
            # It runs as its owner inside the application's writes: nobody needs to call it
            # (a trigger fires without EXECUTE), and anyone who could would attach it elsewhere.
            sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(self.qualified),
            sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(self.qualified, sql.Literal(self.comment)),
        ]

    def drop(self) -> list[sql.Composable]:
        return [sql.SQL("DROP FUNCTION {}()").format(self.qualified)]


@dataclass(frozen=True)
class TriggerDef:
    """A trigger badged wants to exist (one per table and trigger kind)."""

    name: str
    table: Table
    badges: tuple[str, ...]
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
        # No badge list: adding a badge to a table changes its function, never its trigger.
        return comment_for((), self.digest)

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


def render(badges: tuple[Badge, ...], tables: dict[str, Table], settings: Settings,
           routines: Routines = UNKNOWN) -> Desired:
    """Render every badge; *tables* maps each badge's ``str(badge.table)`` to the resolved table.

    *routines* is what the database says the conditions' functions are (``catalog.read_routines``);
    without it nothing is known to be an aggregate, so no scan is shared.
    """
    groups: dict[tuple[str, str, str], tuple[Table, list[Badge]]] = {}
    rows = []
    for badge in badges:
        table = tables[str(badge.table)]
        key = (table.schema, table.name, trigger_kind(badge))
        groups.setdefault(key, (table, []))[1].append(badge)
        rows.append(BadgeRow(
            badge.code, badge.name, table.display, badge.event.value, badge.condition.written, badge.user_field
        ))
    functions, triggers = [], []
    for (_schema, _name, kind), (table, members) in groups.items():
        function = render_function(tuple(members), table, kind, settings, routines)
        functions.append(function)
        triggers.append(render_trigger(tuple(members), table, kind, function))
    return Desired(tuple(functions), tuple(triggers), tuple(rows))


def trigger_kind(badge: Badge) -> str:
    """Which of its table's triggers checks *badge*: its event, or ``update_of`` for column-filtered updates."""
    if badge.event is Event.UPDATE and badge.condition.new_row_only and badge.condition.new_columns:
        return UPDATE_OF
    return badge.event.value


def object_name(settings: Settings, table: Table, kind: str) -> str:
    """``<prefix><schema>$<table>$<kind>``, or a digest of the table when that would not fit 63 bytes."""
    readable = f"{settings.prefix}{table.schema}${table.name}${kind}"
    if len(readable.encode()) <= MAX_IDENTIFIER_BYTES:
        return readable
    digest = hashlib.sha256(f"{table.schema}.{table.name}".encode()).hexdigest()[:12]
    return f"{settings.prefix}{digest}${kind}"


def render_function(badges: tuple[Badge, ...], table: Table, kind: str, settings: Settings,
                    routines: Routines = UNKNOWN) -> FunctionDef:
    # Rendering is pure and the daemon re-renders the same badges on every resync: remember
    # recent results (columns and schema writers are part of the key: Table compares without them).
    return _render_function(badges, table, table.columns, table.schema_writers, kind, settings, routines)


@functools.lru_cache(maxsize=512)
def _render_function(badges: tuple[Badge, ...], table: Table, _columns: tuple[Column, ...],
                     _writers: tuple[str, ...], kind: str, settings: Settings, routines: Routines) -> FunctionDef:
    name = object_name(settings, table, kind)
    event = Event.UPDATE if kind == UPDATE_OF else Event(kind)
    body, probes = compile_body(badges, BodyContext(settings, table, name, event, kind == UPDATE_OF, routines))
    return FunctionDef(
        schema=settings.schema,
        name=name,
        badges=tuple(badge.code for badge in badges),
        body=body,
        search_path=function_search_path(table),
        probes=probes,
    )


def render_trigger(badges: tuple[Badge, ...], table: Table, kind: str, function: FunctionDef) -> TriggerDef:
    columns: tuple[str, ...] = ()
    when: str | None = None
    if kind == UPDATE_OF:
        # Every condition here is a pure function of these columns of NEW: if none of
        # them changed, there is nothing new to decide. UPDATE OF skips the trigger for
        # statements that do not set them; WHEN skips rows where they kept their value
        # (Django's save() sets every column).
        read = tuple(sorted({column for badge in badges for column in badge.condition.new_columns}))
        if not any(table.is_generated(column) for column in read):
            columns = read
        when = changed(read)
    return TriggerDef(
        name=function.name,
        table=table,
        badges=function.badges,
        event=badges[0].event,
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
