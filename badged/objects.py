"""The objects both sides of the diff speak in: what badged wants (``render``) and what is there (``catalog``). Pure.

Desired objects carry their exact DDL, composed with ``psycopg.sql`` (identifiers always
quoted, values always literals); actual ones are plain rows read from ``pg_catalog``.
``plan`` compares the two without touching the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from badged.condition import Event
from badged.marks import Statement, comment_for, fingerprint, text
from badged.own_schema import BadgeRow

# pg_trigger.tgtype bits (src/include/catalog/pg_trigger.h)
TRIGGER_ROW = 1
TRIGGER_EVENT_BITS = {"insert": 4, "delete": 8, "update": 16}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    generated: bool = False
    #: a virtual generated column (PostgreSQL 18): computed when read, but NULL in row triggers
    virtual: bool = False


@dataclass(frozen=True)
class Table:
    """A resolved table (or, for a trigger found in the catalog, just its name)."""

    schema: str
    name: str
    oid: int = 0
    kind: str = "r"
    columns: tuple[Column, ...] = field(default=(), compare=False)
    #: roles other than the reconciling one (and superusers) that may create objects in its schema
    #: ("PUBLIC" for everyone); empty when the schema is trusted (see ``names``)
    schema_writers: tuple[str, ...] = field(default=(), compare=False)

    @property
    def qualified(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def is_generated(self, name: str) -> bool:
        return any(column.name == name and column.generated for column in self.columns)

    def is_virtual(self, name: str) -> bool:
        return any(column.name == name and column.virtual for column in self.columns)


@dataclass(frozen=True)
class ActualFunction:
    oid: int
    schema: str
    name: str
    body: str
    security_definer: bool
    search_path: tuple[str, ...] | None
    language: str
    returns: str
    nargs: int
    comment: str | None
    #: roles other than its owner that may EXECUTE it ("PUBLIC" for everyone); badged grants none
    executors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActualTrigger:
    oid: int
    name: str
    table: Table
    tgtype: int
    enabled: str
    function_schema: str
    function_name: str
    columns: tuple[str, ...]
    has_when: bool
    comment: str | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.table.schema, self.table.name, self.name)


@dataclass(frozen=True)
class ActualBadgeRow(BadgeRow):
    """A row of the badge registry as read, with whether the badge was removed from badge.json."""

    removed: bool = False


@dataclass(frozen=True)
class Catalog:
    """badged's slice of the database, as read at one moment."""

    schema_exists: bool
    tables: frozenset[str]
    functions: tuple[ActualFunction, ...]
    #: prefixed triggers that call one of our functions
    triggers: tuple[ActualTrigger, ...]
    #: prefixed triggers that call someone else's function: never touched
    foreign_triggers: tuple[ActualTrigger, ...]
    badge_rows: tuple[ActualBadgeRow, ...]


@dataclass(frozen=True)
class FunctionDef:
    """A trigger function badged wants to exist (one per table and trigger kind)."""

    schema: str
    name: str
    #: codes of the badges it checks, recorded in its COMMENT
    badges: tuple[str, ...]
    #: the plpgsql body ``render`` compiled
    body: str
    #: pinned with ``SET search_path``: schemas only trusted roles can write to
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
    def qualified(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def create(self) -> list[Statement]:
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

    def drop(self) -> list[Statement]:
        return [sql.SQL("DROP FUNCTION {}()").format(self.qualified)]


@dataclass(frozen=True)
class TriggerDef:
    """A trigger badged wants to exist (one per table and trigger kind)."""

    name: str
    table: Table
    badges: tuple[str, ...]
    event: Event
    #: ``UPDATE OF`` these columns (update triggers); empty for any update or another event
    columns: tuple[str, ...]
    #: the trigger's ``WHEN`` condition, when render could fold one out of the badges' conditions
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

    def create(self) -> list[Statement]:
        return [
            self.definition,
            sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(
                sql.Identifier(self.name), self.table.qualified, sql.Literal(self.comment)
            ),
        ]

    def drop(self) -> list[Statement]:
        return [drop_trigger(self.name, self.table)]


def drop_trigger(name: str, table: Table) -> sql.Composed:
    return sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), table.qualified)


@dataclass(frozen=True)
class Desired:
    """Everything badged wants to exist, rendered from badge.json."""

    functions: tuple[FunctionDef, ...]
    triggers: tuple[TriggerDef, ...]
    badges: tuple[BadgeRow, ...]


def _dollar_tag(body: str) -> str:
    tag, n = "$badged$", 0
    while tag in body:
        n += 1
        tag = f"$badged{n}$"
    return tag
