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
from enum import StrEnum

from psycopg import sql

from badged.body_sql import changed
from badged.condition import Event
from badged.function_body import compile_body
from badged.function_context import BodyContext, function_search_path
from badged.objects import Column, Desired, FunctionDef, Table, TriggerDef
from badged.own_schema import BadgeRow
from badged.routines import UNKNOWN, Routines
from badged.settings import Settings
from badged.spec import MAX_IDENTIFIER_BYTES, Badge


class TriggerKind(StrEnum):
    """Which of a table's triggers checks a badge: its event's, or the column-filtered update trigger."""

    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    #: ``AFTER UPDATE OF <columns> … WHEN``: update badges whose condition reads only columns of NEW
    UPDATE_OF = "update_of"

    @property
    def event(self) -> Event:
        return Event.UPDATE if self is TriggerKind.UPDATE_OF else Event(self.value)




def render(badges: tuple[Badge, ...], tables: dict[str, Table], settings: Settings,
           routines: Routines = UNKNOWN) -> Desired:
    """Render every badge; *tables* maps each badge's ``str(badge.table)`` to the resolved table.

    *routines* is what the database says the conditions' functions are (``catalog.read_routines``);
    without it nothing is known to be an aggregate, so no scan is shared.
    """
    groups: dict[tuple[str, str, TriggerKind], tuple[Table, list[Badge]]] = {}
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


def trigger_kind(badge: Badge) -> TriggerKind:
    """Which of its table's triggers checks *badge*: its event, or ``update_of`` for column-filtered updates."""
    if badge.event is Event.UPDATE and badge.condition.new_row_only and badge.condition.new_columns:
        return TriggerKind.UPDATE_OF
    return TriggerKind(badge.event.value)


def object_name(settings: Settings, table: Table, kind: TriggerKind) -> str:
    """``<prefix><schema>$<table>$<kind>``, or a digest of the table when that would not fit 63 bytes."""
    readable = f"{settings.prefix}{table.schema}${table.name}${kind}"
    if len(readable.encode()) <= MAX_IDENTIFIER_BYTES:
        return readable
    digest = hashlib.sha256(f"{table.schema}.{table.name}".encode()).hexdigest()[:12]
    return f"{settings.prefix}{digest}${kind}"


def render_function(badges: tuple[Badge, ...], table: Table, kind: TriggerKind, settings: Settings,
                    routines: Routines = UNKNOWN) -> FunctionDef:
    # Rendering is pure and the daemon re-renders the same badges on every resync: remember
    # recent results (columns and schema writers are part of the key: Table compares without them).
    return _render_function(badges, table, table.columns, table.schema_writers, kind, settings, routines)


@functools.lru_cache(maxsize=512)
def _render_function(badges: tuple[Badge, ...], table: Table, _columns: tuple[Column, ...],
                     _writers: tuple[str, ...], kind: TriggerKind, settings: Settings, routines: Routines
                     ) -> FunctionDef:
    name = object_name(settings, table, kind)
    body, probes = compile_body(badges, BodyContext(settings, table, name, kind.event, kind is TriggerKind.UPDATE_OF,
                                                    routines))
    return FunctionDef(
        schema=settings.schema,
        name=name,
        badges=tuple(badge.code for badge in badges),
        body=body,
        search_path=function_search_path(table),
        probes=probes,
    )


def render_trigger(badges: tuple[Badge, ...], table: Table, kind: TriggerKind, function: FunctionDef) -> TriggerDef:
    columns: tuple[str, ...] = ()
    when: str | None = None
    if kind is TriggerKind.UPDATE_OF:
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


