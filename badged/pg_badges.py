"""The original django-pg-badges: how to recognise what it installed, and the statements that move off it. Pure.

django-pg-badges 0.1 keeps awards in ``badges_badge`` (``id``, ``user_id``, ``name``, ``code``; no time of
award) and renders, for each badge of badge.json, one function and one trigger from its ``trigger.sql``::

    CREATE OR REPLACE FUNCTION badge_{name}() RETURNS trigger AS $badge_{name}$ ... INSERT INTO badges_badge
    (user_id, name, code) VALUES (...) ... $badge_{name}$ LANGUAGE plpgsql;
    CREATE TRIGGER badge_{name} AFTER {event} ON {table} FOR EACH ROW EXECUTE PROCEDURE badge_{name}();

It never dropped a function, so functions of badges renamed or removed long ago are still there. They are
recognised by what its naming and its template produce (``is_original_function``), never by a ``LIKE
'badge_%'`` (``_`` is a wildcard: that pattern also matches ``badged_…``, which is how the original's
clean-up drops badged's triggers).

Moving off it (``badged.migrate_from``) imports its awards *as history*: into badged's award table with
``txid`` 0, which every snapshot counts as committed before it, so no consumer position, old or new, ever
delivers them as events; each imported award is recorded in ``<schema>.imported_award`` with the original
row's id, so a second run imports nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from psycopg import sql

from badged.own_schema import AWARD_TABLE, BADGE_TABLE
from badged.plan import Plan
from badged.settings import Settings

#: how badged names the source in the CLI, its records and its output
SOURCE = "django-pg-badges"
#: the original's award table (its Django app ``badges``, model ``Badge``)
ORIGINAL_TABLE = "badges_badge"
#: every function and trigger its template creates is named ``badge_{name}`` (folded to lower case)
ORIGINAL_PREFIX = "badge_"
#: badged's record of what it imported: one row per award, with the original row's id
IMPORTED_TABLE = "imported_award"
#: columns of a later or patched ``badges_badge`` that may hold when a badge was earned (0.1 has none)
TIME_COLUMNS = ("awarded_at", "created_at", "created", "date_awarded", "date", "timestamp")
#: the original's award insert, as its template writes it (whitespace aside)
_TEMPLATE_INSERT = re.compile(r"INSERT\s+INTO\s+badges_badge\s*\(\s*user_id\s*,\s*name\s*,\s*code\s*\)", re.I)
#: the original's "already has it" check (``code=code``: its defect that let a user hold only one badge)
_TEMPLATE_CHECK = re.compile(r"FROM\s+badges_badge\s+WHERE\s+user_id\s*=\s*NEW\.", re.I)
#: xid8 0: "committed before every snapshot", so no position ever counts an award of it as new
HISTORY_TXID = "0"


@dataclass(frozen=True)
class OriginalTrigger:
    """A trigger that calls one of the original's functions."""

    name: str
    table_schema: str
    table_name: str

    @property
    def display(self) -> str:
        return f"{self.name} on {self.table_schema}.{self.table_name}"


@dataclass(frozen=True)
class SchemaObject:
    """A table or function of the original's, by schema and name."""

    schema: str
    name: str
    #: what follows the name when it is shown: "()" for a function
    shown_after: ClassVar[str] = ""

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}{self.shown_after}"


@dataclass(frozen=True)
class OriginalFunction(SchemaObject):
    """A function the original's template created."""

    shown_after: ClassVar[str] = "()"


@dataclass(frozen=True)
class OriginalTable(SchemaObject):
    """``badges_badge``, where the original keeps its awards."""

    #: a column that says when the badge was earned (``TIME_COLUMNS``), or None: the import's time is used
    time_column: str | None = None


@dataclass(frozen=True)
class AwardCount:
    """The original's awards of one badge code, and how many of them the import would add."""

    code: str
    #: distinct users holding it in ``badges_badge``
    users: int
    #: of those, not yet in badged's award table (nor imported before)
    to_import: int
    #: whether badge.json still has this code (an award of a removed badge is imported all the same)
    in_badge_json: bool


@dataclass(frozen=True)
class Original:
    """What django-pg-badges left in the database, in the schema of its table (the search_path's)."""

    table: OriginalTable | None
    #: its functions in the table's schema, and the triggers calling them: what the migration drops
    functions: tuple[OriginalFunction, ...]
    triggers: tuple[OriginalTrigger, ...]
    awards: tuple[AwardCount, ...]
    #: its functions in other schemas (another tenant's, with its own badges_badge): left alone
    elsewhere: tuple[OriginalFunction, ...] = ()

    @property
    def found(self) -> bool:
        return self.table is not None or bool(self.functions) or bool(self.triggers)

    @property
    def to_import(self) -> int:
        return sum(count.to_import for count in self.awards)


@dataclass(frozen=True)
class Migration:
    """What ``migrate-from django-pg-badges`` found and does (or did): the original's side and badged's plan."""

    original: Original
    #: badged's reconcile, run in the same transaction
    plan: Plan
    applied: bool
    #: awards imported (0 in a dry run)
    imported: int = 0
    seconds: float = 0.0

    @property
    def nothing_to_do(self) -> bool:
        return (not self.original.functions and not self.original.triggers and self.original.to_import == 0
                and self.plan.in_sync)


def is_original_function(name: str, body: str) -> bool:
    """Whether a trigger function named *name* with plpgsql *body* is one the original's template created.

    Its name is ``badge_`` and more (a literal underscore: never ``badged_…``) and its body inserts into
    ``badges_badge`` as the template does (badged's own functions live in badged's schema, never read here).
    """
    return name.startswith(ORIGINAL_PREFIX) and bool(_TEMPLATE_INSERT.search(body) and _TEMPLATE_CHECK.search(body))


def time_column(columns: Mapping[str, str]) -> str | None:
    """The column of ``badges_badge`` that says when a badge was earned: *columns* maps names to type names."""
    return next((name for name in TIME_COLUMNS
                 if columns.get(name) in ("timestamp with time zone", "timestamp without time zone", "date")), None)


def lock_statements(original: Original) -> list[sql.Composed]:
    """Hold every write to the tables the original's triggers watch, then to its award table, until commit.

    ``SHARE ROW EXCLUSIVE``: writers wait (no new award of the original can commit after the import has read),
    readers do not; the triggers are dropped last, so ``ACCESS EXCLUSIVE`` is held only for the commit. In the
    order a writer takes them (its table, then, through the original's trigger, ``badges_badge``), so a writer
    holding its table and waiting for ``badges_badge`` is never waited for in turn.
    """
    watched = sorted({(trigger.table_schema, trigger.table_name) for trigger in original.triggers})
    own = [(original.table.schema, original.table.name)] if original.table is not None else []
    ordered = watched + [table for table in own if table not in watched]
    return [sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(*table)) for table in ordered]


def register_unknown_codes(table: OriginalTable, settings: Settings) -> sql.Composed:
    """A registry row, marked removed, for each code of the original's awards badged has never known.

    So every award finds its badge (the Django models join on it): its name is the original's.
    """
    return sql.SQL(
        "INSERT INTO {badge} (code, name, trigger_table, trigger_condition, condition, user_field, removed_at)\n"
        "SELECT DISTINCT ON (b.code) b.code, b.name, '', '', '', '', pg_catalog.now() FROM {original} b\n"
        "ORDER BY b.code, b.id\n"
        "ON CONFLICT (code) DO NOTHING"
    ).format(badge=sql.Identifier(settings.schema, BADGE_TABLE), original=sql.Identifier(table.schema, table.name))


def drop_statements(original: Original) -> list[sql.Composed]:
    """Drop the original's triggers, then its functions (never ``CASCADE``: nothing else is touched)."""
    triggers = [sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger.name),
                                                        sql.Identifier(trigger.table_schema, trigger.table_name))
                for trigger in original.triggers]
    functions = [sql.SQL("DROP FUNCTION {}()").format(sql.Identifier(function.schema, function.name))
                 for function in original.functions]
    return triggers + functions


def create_imported_table(settings: Settings) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (\n"
        "    award_id bigint PRIMARY KEY,\n"
        "    source text NOT NULL,\n"
        "    source_id text NOT NULL,\n"
        "    imported_at timestamptz NOT NULL DEFAULT pg_catalog.now(),\n"
        "    UNIQUE (source, source_id)\n"
        ")"
    ).format(sql.Identifier(settings.schema, IMPORTED_TABLE))


def _not_yet_in_badged(settings: Settings, *, award_table: bool, imported_table: bool) -> sql.Composable:
    """The condition on an original row ``b`` that it is in neither badged's award table nor its import record."""
    conditions: list[sql.Composable] = []
    if award_table:
        conditions.append(sql.SQL(
            "NOT EXISTS (SELECT FROM {} a WHERE a.badge = b.code AND a.user_id = b.user_id::text)"
        ).format(sql.Identifier(settings.schema, AWARD_TABLE)))
    if imported_table:
        conditions.append(sql.SQL(
            "NOT EXISTS (SELECT FROM {} i WHERE i.source = {} AND i.source_id = b.id::text)"
        ).format(sql.Identifier(settings.schema, IMPORTED_TABLE), sql.Literal(SOURCE)))
    return sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")


def count_statement(table: OriginalTable, settings: Settings, *, award_table: bool,
                    imported_table: bool) -> sql.Composed:
    """Per code: distinct users holding it in ``badges_badge``, and how many of those the import would add."""
    return sql.SQL(
        "SELECT b.code, count(DISTINCT b.user_id), count(DISTINCT b.user_id) FILTER (WHERE {new})\n"
        "FROM {original} b GROUP BY b.code ORDER BY b.code"
    ).format(new=_not_yet_in_badged(settings, award_table=award_table, imported_table=imported_table),
             original=sql.Identifier(table.schema, table.name))


def import_statement(table: OriginalTable, settings: Settings) -> sql.Composed:
    """Copy the original's awards into badged's award table as history, and record each one imported.

    One per (code, user) (the original's unique key was (user, name)); ``ON CONFLICT DO NOTHING`` keeps an
    award badged made meanwhile. ``txid`` 0: no consumer position delivers them; no NOTIFY.
    """
    awarded_at: sql.Composable = (
        sql.SQL("COALESCE(b.{}::timestamptz, pg_catalog.now())").format(sql.Identifier(table.time_column))
        if table.time_column else sql.SQL("pg_catalog.now()"))
    return sql.SQL(
        "WITH source AS (\n"
        "    SELECT DISTINCT ON (b.code, b.user_id) b.id::text AS source_id, b.code, b.user_id::text AS user_id,\n"
        "           {awarded_at} AS awarded_at\n"
        "    FROM {original} b WHERE {new}\n"
        "    ORDER BY b.code, b.user_id, b.id\n"
        "), added AS (\n"
        "    INSERT INTO {award} (badge, user_id, awarded_at, txid)\n"
        "    SELECT code, user_id, awarded_at, {txid}::xid8 FROM source\n"
        "    ON CONFLICT (badge, user_id) DO NOTHING\n"
        "    RETURNING id, badge, user_id\n"
        ")\n"
        "INSERT INTO {imported} (award_id, source, source_id)\n"
        "SELECT added.id, {source}, source.source_id\n"
        "FROM added JOIN source ON source.code = added.badge AND source.user_id = added.user_id"
    ).format(
        awarded_at=awarded_at,
        original=sql.Identifier(table.schema, table.name),
        new=_not_yet_in_badged(settings, award_table=False, imported_table=True),
        award=sql.Identifier(settings.schema, AWARD_TABLE),
        txid=sql.Literal(HISTORY_TXID),
        imported=sql.Identifier(settings.schema, IMPORTED_TABLE),
        source=sql.Literal(SOURCE),
    )
