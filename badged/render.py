"""Badges → the PostgreSQL objects that should exist for them, with their exact SQL.

The badges of one table and one event share **one** AFTER ROW trigger and **one**
plpgsql function (in badged's schema), named ``<prefix><schema>$<table>$<event>``
(codes cannot contain ``$``, so these names never meet a badge's). Per written row
the function:

1. reads the user id (per ``user_field``; most tables have one);
2. looks up, in one index lookup, which of the table's badges the user already holds,
   and stops there if they hold them all — the cheap path first;
3. evaluates the conditions of the others: plain expressions (``hit_views > 1000``) as
   plpgsql IFs, which run no query, and every condition that runs a query in **one**
   query (``CASE`` skips held badges; aggregate tails over the same FROM/WHERE, such as
   bronze/silver/gold on one count, share one subquery), because a query per row is
   what a trigger costs most. All of it inside one read-only exception guard: if any
   condition fails, each is evaluated again in a guard of its own, so only the failing
   badge is skipped (with a WARNING) and the application's write never fails;
4. inserts the earned awards in one statement (``ON CONFLICT DO NOTHING``) and
   NOTIFYs each new one.

Update badges whose condition reads only columns of NEW (``hit_views > 1000``) get a
trigger of their own kind (``update_of``) with ``UPDATE OF <columns>`` and ``WHEN``, so
writes that change none of those columns never call a function at all.

badged's own tables (the awards and the badge registry) are rendered here too.
Everything is composed with ``psycopg.sql``, so identifiers are always quoted and
values always literals; conditions come from pglast's deparser (see ``condition``),
never from raw text.

Pure: no database. Tables are passed in already resolved (see ``catalog.Table``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from psycopg import sql

from badged.catalog import Column, Table
from badged.condition import Event, shared_select
from badged.settings import Settings
from badged.spec import MAX_IDENTIFIER_BYTES, Badge

AWARD_TABLE = "award"
BADGE_TABLE = "badge"
GROUP_TABLE = "consumer_group"
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


def render(badges: tuple[Badge, ...], tables: dict[str, Table], settings: Settings) -> Desired:
    """Render every badge; *tables* maps each badge's ``str(badge.table)`` to the resolved table."""
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
        function = render_function(tuple(members), table, kind, settings)
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


def render_function(badges: tuple[Badge, ...], table: Table, kind: str, settings: Settings) -> FunctionDef:
    # Rendering is pure and the daemon re-renders the same badges on every resync:
    # remember recent results (the columns are part of the key: Table compares without them).
    return _render_function(badges, table, table.columns, kind, settings)


@functools.lru_cache(maxsize=512)
def _render_function(badges: tuple[Badge, ...], table: Table, _columns: tuple[Column, ...], kind: str,
                     settings: Settings) -> FunctionDef:
    award = sql.SQL("{}.{}").format(sql.Identifier(settings.schema), sql.Identifier(AWARD_TABLE))
    sections: dict[str, list[Badge]] = {}
    for badge in badges:
        sections.setdefault(badge.user_field, []).append(badge)
    body = _FUNCTION_BODY.format(sections=sql.SQL("\n").join(
        _section(tuple(members), user_field, award, settings, filtered=kind == UPDATE_OF, alone=len(badges) == 1)
        for user_field, members in sections.items()
    ))
    return FunctionDef(
        schema=settings.schema,
        name=object_name(settings, table, kind),
        badges=tuple(badge.code for badge in badges),
        body=text(body),
        search_path=("pg_catalog", table.schema, "pg_temp"),
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
        when = _changed(read)
    return TriggerDef(
        name=function.name,
        table=table,
        badges=function.badges,
        event=badges[0].event,
        columns=columns,
        when=when,
        function=function,
    )


def _changed(columns: tuple[str, ...]) -> str:
    return text(sql.SQL(" OR ").join(
        sql.SQL("OLD.{c} IS DISTINCT FROM NEW.{c}").format(c=sql.Identifier(column)) for column in columns
    ))


def _codes(codes: list[str] | tuple[str, ...]) -> sql.Composed:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, codes)))


def _section(badges: tuple[Badge, ...], user_field: str, award: sql.Composable, settings: Settings, *,
             filtered: bool, alone: bool) -> sql.Composed:
    """The part of a function that serves the badges whose user is *user_field* of the changed row."""
    codes = _codes([badge.code for badge in badges])
    if len(badges) == 1:  # the common case, and the cheapest lookup: the unique index, both columns equal
        held = sql.SQL("_badged_held := ARRAY(SELECT badge FROM {award} WHERE badge = {code} "
                       "AND user_id = _badged_user);").format(award=award, code=sql.Literal(badges[0].code))
    else:
        held = sql.SQL("_badged_held := ARRAY(SELECT badge FROM {award} WHERE user_id = _badged_user "
                       "AND badge = ANY ({codes}));").format(award=award, codes=codes)
    return _SECTION.format(
        codes_comment=sql.SQL(", ".join(badge.code for badge in badges)),  # codes: letters, digits, _ and -
        user_value=sql.SQL("{}.{}").format(sql.SQL(badges[0].event.changed_row), sql.Identifier(user_field)),
        award=award,
        held=held,
        count=sql.Literal(len(badges)),
        fast=_fast_checks(badges, filtered, alone=alone),
        careful=sql.SQL("\n").join(_guarded_check(badge, filtered) for badge in badges),
        channel=sql.Literal(settings.channel),
    )


def _fast_checks(badges: tuple[Badge, ...], filtered: bool, *, alone: bool) -> sql.Composed:
    """Plain expressions as plpgsql IFs (no query at all); all conditions that run queries in ONE query."""
    if alone:
        # The function's only badge: the user does not hold it (or we would not be here), and
        # for update_of the trigger's WHEN has already seen its columns change. Nothing to re-check.
        (badge,) = badges
        return _LONE_CHECK.format(condition=sql.SQL(badge.condition.expression), code=sql.Literal(badge.code))
    querying = [badge for badge in badges if badge.condition.runs_query]
    if len(querying) == 1:  # one query either way: the condition's own is the simplest
        querying = []
    plain = [badge for badge in badges if badge not in querying]
    checks = [_CHECK.format(unless=_unless_held(badge, filtered, "_badged_held"),
                            condition=sql.SQL(badge.condition.expression), code=sql.Literal(badge.code))
              for badge in plain]
    if querying:
        checks.append(_query_checks(querying, filtered))
    return sql.SQL("\n").join(checks)


def _query_checks(badges: list[Badge], filtered: bool) -> sql.Composed:
    """One query evaluating the conditions of *badges* the user does not hold (``CASE`` skips the others)."""
    shared: dict[tuple[str, tuple[str, ...]], list[Badge]] = {}
    for badge in badges:
        if (key := badge.condition.share_key) is not None:
            shared.setdefault(key, []).append(badge)
    shared = {key: members for key, members in shared.items() if len(members) > 1}
    grouped = {badge.code for members in shared.values() for badge in members}
    singles = [badge for badge in badges if badge.code not in grouped]
    # The codes in the order of the results array: single conditions first, then each shared group.
    order = [badge.code for badge in singles] + [badge.code for members in shared.values() for badge in members]
    parts: list[sql.Composable] = []
    if singles:
        parts.append(sql.SQL("ARRAY[\n{}\n                    ]::boolean[]").format(sql.SQL(",\n").join(
            _single_result(badge, filtered) for badge in singles)))
    parts += [_shared_results(query, members) for (query, _scope), members in shared.items()]
    return _QUERY_CHECKS.format(order=_codes(order), results=sql.SQL(" || ").join(parts))


def _unless_held(badge: Badge, filtered: bool, held: str) -> sql.Composed:
    """When *badge* still has to be checked: the user does not hold it (and, filtered, its columns changed)."""
    unless = sql.SQL("NOT ({} = ANY ({}))").format(sql.Literal(badge.code), sql.SQL(held))
    if filtered:  # only when one of the columns it reads changed, as a trigger of its own would
        unless = sql.SQL("{} AND ({})").format(unless, sql.SQL(_changed(badge.condition.new_columns)))
    return unless


def _single_result(badge: Badge, filtered: bool) -> sql.Composed:
    # CASE: the condition of a badge the user holds is never evaluated (its subqueries never run).
    return sql.SQL("                        CASE WHEN {unless} THEN {condition} END").format(
        unless=_unless_held(badge, filtered, "_badged_held"),
        condition=sql.SQL(badge.condition.expression))


def _shared_results(shared_query: str, badges: list[Badge]) -> sql.Composed:
    """One query computing every condition of *badges* (unless the user holds them all)."""
    members = [(badge.condition.target or "", badge.condition.where) for badge in badges]
    return sql.SQL(
        "CASE WHEN NOT (_badged_held @> {codes}) THEN ({query})\n"
        "                    ELSE pg_catalog.array_fill(NULL::boolean, ARRAY[{count}]) END"
    ).format(codes=_codes([badge.code for badge in badges]), query=sql.SQL(shared_select(shared_query, members)),
             count=sql.Literal(len(badges)))


def _guarded_check(badge: Badge, filtered: bool) -> sql.Composed:
    code = sql.Literal(badge.code)
    return _GUARDED_CHECK.format(unless=_unless_held(badge, filtered, "_badged_held"),
                                 condition=sql.SQL(badge.condition.expression), code=code)


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
    _badged_user text;
    _badged_held text[];
    _badged_earned text[];
    _badged_award bigint;
    _badged_code text;
BEGIN
{sections}
    RETURN NULL;
END
""")

_SECTION = sql.SQL("""
    -- badges {codes_comment}
    _badged_user := ({user_value})::text;
    IF _badged_user IS NOT NULL THEN
        -- Cheap path first: which of these badges the user already holds, in one index lookup.
        {held}
        IF cardinality(_badged_held) < {count} THEN
            _badged_earned := '{{}}';
            -- A failing condition must not fail the application's write. The guard only
            -- reads, so it never assigns a subtransaction id; on a failure, each condition
            -- is evaluated again in a guard of its own, so that only that badge is skipped.
            BEGIN
{fast}
            EXCEPTION WHEN OTHERS THEN
                _badged_earned := '{{}}';
{careful}
            END;
            IF cardinality(_badged_earned) > 0 THEN
                FOR _badged_award, _badged_code IN
                    INSERT INTO {award} (badge, user_id) SELECT unnest(_badged_earned), _badged_user
                    ON CONFLICT (badge, user_id) DO NOTHING
                    RETURNING id, badge
                LOOP
                    -- The doorbell only: listeners read the award table. Small by construction
                    -- (NOTIFY payloads must stay under 8000 bytes).
                    PERFORM pg_notify({channel}, json_build_object(
                        'award_id', _badged_award,
                        'badge', _badged_code,
                        'user_id', CASE WHEN octet_length(_badged_user) <= 1024 THEN _badged_user END
                    )::text);
                END LOOP;
            END IF;
        END IF;
    END IF;""")

_CHECK = sql.SQL("""                IF {unless} THEN
                    IF {condition} THEN
                        _badged_earned := _badged_earned || {code}::text;
                    END IF;
                END IF;""")

_LONE_CHECK = sql.SQL("""                IF {condition} THEN
                    _badged_earned := ARRAY[{code}::text];
                END IF;""")

# Every condition that runs a query, in one query: a query per written row is what a
# trigger costs most. CASE leaves the conditions of held badges unevaluated (their
# subqueries never run); aggregate tails over the same rows share one subquery.
_QUERY_CHECKS = sql.SQL("""                _badged_earned := _badged_earned || ARRAY(
                    SELECT _badged_r._badged_c
                    FROM unnest({order},
                    {results}
                    ) AS _badged_r (_badged_c, _badged_ok)
                    WHERE _badged_r._badged_ok AND NOT (_badged_r._badged_c = ANY (_badged_held)));""")

_GUARDED_CHECK = sql.SQL("""                IF {unless} THEN
                    BEGIN
                        IF {condition} THEN
                            _badged_earned := _badged_earned || {code}::text;
                        END IF;
                    EXCEPTION WHEN OTHERS THEN
                        RAISE WARNING 'badged: condition of badge % failed on %.%: % (SQLSTATE %)',
                            {code}, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
                    END;
                END IF;""")


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
