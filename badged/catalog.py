"""What the database has: the only module that reads pg_catalog.

It reads triggers and functions whose names carry badged's prefix (and nothing
else of anyone's), badged's own tables, and the tables badge.json names. The
results are plain frozen dataclasses; ``plan`` compares them with ``render``'s
output without touching the database again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pglast import ast, parse_sql
from pglast.parser import ParseError
from psycopg import Connection, sql
from psycopg.rows import dict_row

from badged.names import KnownNames, Name, NameKind
from badged.objects import ActualBadgeRow, ActualFunction, ActualTrigger, Catalog, Column, Table
from badged.own_schema import AWARD_TABLE, tables_exist
from badged.pg_badges import (
    IMPORTED_TABLE,
    ORIGINAL_TABLE,
    AwardCount,
    Original,
    OriginalFunction,
    OriginalTable,
    OriginalTrigger,
    count_statement,
    is_original_function,
    time_column,
)
from badged.routines import RoutineKind, Routines
from badged.settings import Settings
from badged.spec import TableName


def read_catalog(conn: Connection[Any], settings: Settings) -> Catalog:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_SCHEMA_SQL, {"schema": settings.schema})
        row = cur.fetchone() or {}  # an aggregate-free SELECT of two EXISTS always answers one row
        schema_exists, tables = bool(row.get("schema_exists")), frozenset(row.get("tables") or ())
        cur.execute(_FUNCTIONS_SQL, {"schema": settings.schema, "prefix": settings.prefix})
        functions = tuple(_function(r) for r in cur.fetchall())
        cur.execute(_TRIGGERS_SQL, {"prefix": settings.prefix})
        triggers = [_trigger(r) for r in cur.fetchall()]
        badge_rows: tuple[ActualBadgeRow, ...] = ()
        if "badge" in tables:
            cur.execute(sql.SQL(
                "SELECT code, name, trigger_table, trigger_condition, condition, user_field,"
                " removed_at IS NOT NULL AS removed FROM {}.badge ORDER BY code"
            ).format(sql.Identifier(settings.schema)))
            badge_rows = tuple(ActualBadgeRow(**r) for r in cur.fetchall())
    ours = {(f.schema, f.name) for f in functions}
    return Catalog(
        schema_exists=schema_exists,
        tables=tables,
        functions=functions,
        triggers=tuple(t for t in triggers if (t.function_schema, t.function_name) in ours),
        foreign_triggers=tuple(t for t in triggers if (t.function_schema, t.function_name) not in ours),
        badge_rows=badge_rows,
    )


def own_table_exists(conn: Connection[Any], settings: Settings, table: str) -> bool:
    """Whether badged's *table* exists (before the first reconcile, none does)."""
    row = conn.execute(*tables_exist(settings, table)).fetchone()
    return bool(row and row[0])


def resolve_tables(conn: Connection[Any], names: Iterable[TableName]) -> dict[str, Table | None]:
    """Resolve each name as PostgreSQL would (search_path for unqualified ones)."""
    resolved: dict[str, Table | None] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        # by their text: a schema of None (resolved by search_path) does not compare with a str
        for name in sorted(set(names), key=str):
            cur.execute(_TABLE_SQL, {"schema": name.schema, "name": name.name})
            row = cur.fetchone()
            if row is None or row["oid"] is None:
                resolved[str(name)] = None
                continue
            columns = tuple(Column(c["name"], c["type"], c["generated"], c["virtual"]) for c in row["columns"] or ())
            resolved[str(name)] = Table(row["schema"], row["name"], row["oid"], row["kind"], columns,
                                        tuple(row["schema_writers"] or ()))
    return resolved


def read_routines(conn: Connection[Any], names: Iterable[str]) -> Routines:
    """The kind of every overload of these function names, in every schema (``pg_proc.prokind``)."""
    wanted = sorted(set(names))
    if not wanted:
        return Routines()
    rows = conn.execute(_ROUTINES_SQL, {"names": wanted}).fetchall()
    return Routines(frozenset((schema, name, RoutineKind(kind)) for schema, name, kind in rows))


def read_names(conn: Connection[Any], schemas: Iterable[str], names: Iterable[Name],
               calls: Iterable[tuple[str | None, str]]) -> KnownNames:
    """Where *names* exist among *schemas*, which functions of *calls* are VOLATILE, who may create where."""
    wanted: dict[NameKind, list[str]] = {kind: [] for kind in NameKind}
    for kind, name in set(names):
        wanted[kind].append(name)
    rows = conn.execute(_NAMES_SQL, {
        "schemas": sorted(set(schemas)), "relations": sorted(wanted[NameKind.RELATION]),
        "functions": sorted(wanted[NameKind.FUNCTION]), "types": sorted(wanted[NameKind.TYPE]),
        "calls": sorted({name for _, name in calls}),
        "all_schemas": sorted(set(schemas) | {schema for schema, _ in calls if schema is not None}),
    }).fetchall()
    found = frozenset((NameKind(kind), schema, name) for kind, schema, name in rows if kind in set(NameKind))
    volatile = frozenset((schema, name) for kind, schema, name in rows if kind == "volatile")
    writers = tuple(sorted((schema, tuple(filter(None, text.split(",")))) for kind, schema, text in rows
                           if kind == "writers"))
    return KnownNames(found, volatile, writers)


def parse_search_path(value: str) -> tuple[str, ...] | None:
    """Split a stored ``search_path`` setting into schema names, as PostgreSQL reads it."""
    try:
        statements = parse_sql(f"SET search_path = {value}")
    except ParseError:
        return None
    stmt: Any = statements[0].stmt
    names: list[str] = []
    for arg in stmt.args or ():
        if not (isinstance(arg, ast.A_Const) and isinstance(arg.val, ast.String)):
            return None
        names.append(str(arg.val.sval))
    return tuple(names)


def _function(row: dict[str, Any]) -> ActualFunction:
    search_path = None
    for setting in row["config"] or ():
        key, _, value = setting.partition("=")
        if key == "search_path":
            search_path = parse_search_path(value)
    return ActualFunction(
        oid=row["oid"],
        schema=row["schema"],
        name=row["name"],
        body=row["body"],
        security_definer=row["security_definer"],
        search_path=search_path,
        language=row["language"],
        returns=row["returns"],
        nargs=row["nargs"],
        comment=row["comment"],
        executors=tuple(row["executors"] or ()),
    )


def _trigger(row: dict[str, Any]) -> ActualTrigger:
    return ActualTrigger(
        oid=row["oid"],
        name=row["name"],
        table=Table(row["table_schema"], row["table_name"], row["table_oid"]),
        tgtype=row["tgtype"],
        enabled=row["enabled"],
        function_schema=row["function_schema"],
        function_name=row["function_name"],
        columns=tuple(row["columns"] or ()),
        has_when=row["has_when"],
        comment=row["comment"],
    )


# Who, besides the reconciling role (and roles that are it), may create objects in schema n:
# ["PUBLIC"] when everyone may, else the login roles that may (a group role such as
# pg_database_owner through its members); empty when it is trusted (see names).
_SCHEMA_WRITERS = """CASE
    WHEN EXISTS (SELECT FROM pg_catalog.aclexplode(COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) AS a
                 WHERE a.grantee = 0 AND a.privilege_type = 'CREATE') THEN ARRAY['PUBLIC']
    ELSE ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles AS r
               WHERE r.rolcanlogin AND NOT r.rolsuper
                 AND NOT pg_catalog.pg_has_role(r.oid, pg_catalog.current_user(), 'MEMBER')
                 AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE')
               ORDER BY 1) END"""

_SCHEMA_SQL = """
SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s) AS schema_exists,
       ARRAY(SELECT c.relname::text FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v')) AS tables
"""

_FUNCTIONS_SQL = """
SELECT p.oid::int8 AS oid, n.nspname::text AS schema, p.proname::text AS name, p.prosrc AS body,
       p.prosecdef AS security_definer, p.proconfig AS config, l.lanname::text AS language,
       p.prorettype::regtype::text AS returns, p.pronargs::int AS nargs,
       pg_catalog.obj_description(p.oid, 'pg_proc') AS comment,
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                         ELSE (SELECT r.rolname::text FROM pg_catalog.pg_roles r WHERE r.oid = a.grantee) END
             FROM pg_catalog.aclexplode(COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner))) AS a
             WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
             ORDER BY 1) AS executors
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname = %(schema)s AND pg_catalog.starts_with(p.proname::text, %(prefix)s)
ORDER BY p.proname
"""

# tgparentid <> 0 marks the clones PostgreSQL makes on partitions: they follow
# the parent's trigger and are not ours to compare or drop.
_TRIGGERS_SQL = """
SELECT t.oid::int8 AS oid, t.tgname::text AS name, c.oid::int8 AS table_oid,
       cn.nspname::text AS table_schema, c.relname::text AS table_name,
       t.tgtype::int AS tgtype, t.tgenabled::text AS enabled,
       fn.nspname::text AS function_schema, f.proname::text AS function_name,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::int2[])
             ORDER BY a.attname) AS columns,
       t.tgqual IS NOT NULL AS has_when,
       pg_catalog.obj_description(t.oid, 'pg_trigger') AS comment
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace
WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND pg_catalog.starts_with(t.tgname::text, %(prefix)s)
ORDER BY cn.nspname, c.relname, t.tgname
"""

_TABLE_SQL = """
WITH target AS (
    SELECT pg_catalog.to_regclass(
        CASE WHEN %(schema)s::text IS NULL THEN pg_catalog.quote_ident(%(name)s)
             ELSE pg_catalog.quote_ident(%(schema)s) || '.' || pg_catalog.quote_ident(%(name)s) END
    ) AS oid
)
SELECT c.oid::int8 AS oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
       ARRAY(SELECT pg_catalog.json_build_object(
                 'name', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
                 'generated', a.attgenerated <> '', 'virtual', a.attgenerated = 'v')
             FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum) AS columns,
       $SCHEMA_WRITERS$ AS schema_writers
FROM target LEFT JOIN pg_catalog.pg_class c ON c.oid = target.oid
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
"""

_NAMES_SQL = """
SELECT 'relation', n.nspname::text, c.relname::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY (%(schemas)s::text[]) AND c.relname = ANY (%(relations)s::text[])
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
UNION
SELECT 'function', n.nspname::text, p.proname::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY (%(schemas)s::text[]) AND p.proname = ANY (%(functions)s::text[])
UNION
SELECT 'type', n.nspname::text, t.typname::text
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = ANY (%(schemas)s::text[]) AND t.typname = ANY (%(types)s::text[])
UNION
SELECT 'writers', n.nspname::text, pg_catalog.array_to_string($SCHEMA_WRITERS$, ',')
FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY (%(all_schemas)s::text[]) AND n.nspname <> 'pg_catalog'
UNION
SELECT 'volatile', n.nspname::text, p.proname::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = ANY (%(calls)s::text[]) AND p.provolatile = 'v'
"""

_ROUTINES_SQL = """
SELECT DISTINCT n.nspname::text, p.proname::text, p.prokind::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = ANY (%(names)s::text[])
"""

_TABLE_SQL = _TABLE_SQL.replace("$SCHEMA_WRITERS$", _SCHEMA_WRITERS)
_NAMES_SQL = _NAMES_SQL.replace("$SCHEMA_WRITERS$", _SCHEMA_WRITERS)


def read_original(conn: Connection[Any], settings: Settings, codes: Iterable[str]) -> Original:
    """What django-pg-badges left: its award table (found through the search_path, as its Django app names it),
    the functions its template created, the triggers calling them, and per badge code what the import would add.
    *codes* are badge.json's."""
    every = read_original_functions(conn, settings)
    with conn.cursor() as cur:
        cur.execute(_ORIGINAL_TABLE_SQL, (ORIGINAL_TABLE,))
        found = cur.fetchone()
        if found is None or not {"code", "user_id", "id"} <= set(found[2]):
            return Original(None, (), (), (), elsewhere=every)
        table = OriginalTable(found[0], found[1], time_column(dict(zip(found[2], found[3], strict=True))))
        functions = tuple(f for f in every if f.schema == table.schema)
        cur.execute(_ORIGINAL_TRIGGERS_SQL, {"schemas": [f.schema for f in functions],
                                             "names": [f.name for f in functions]})
        triggers = tuple(OriginalTrigger(*row) for row in cur.fetchall())
        award_table, imported_table = cur.execute(*tables_exist(settings, AWARD_TABLE, IMPORTED_TABLE)).fetchone() or (
            False, False)
        cur.execute(count_statement(table, settings, award_table=award_table, imported_table=imported_table))
        wanted = set(codes)
        awards = tuple(AwardCount(code, users, to_import, code in wanted) for code, users, to_import in cur.fetchall())
    return Original(table, functions, triggers, awards, elsewhere=tuple(f for f in every if f not in functions))


def read_original_functions(conn: Connection[Any], settings: Settings) -> tuple[OriginalFunction, ...]:
    """The functions django-pg-badges' template created (``pg_badges.is_original_function``)."""
    rows = conn.execute(_ORIGINAL_FUNCTIONS_SQL, {"schema": settings.schema}).fetchall()
    return tuple(OriginalFunction(schema, name) for schema, name, body in rows if is_original_function(name, body))


#: trigger functions of no arguments in plpgsql named badge_… (a literal "_"), outside badged's schema
_ORIGINAL_FUNCTIONS_SQL = """
SELECT n.nspname, p.proname, p.prosrc
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE pg_catalog.starts_with(p.proname, 'badge_')
  AND p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AND p.pronargs = 0 AND l.lanname = 'plpgsql'
  AND n.nspname <> %(schema)s AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY n.nspname, p.proname
"""

_ORIGINAL_TRIGGERS_SQL = """
SELECT t.tgname, tn.nspname, c.relname
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND t.tgparentid = 0
  AND (pn.nspname, p.proname) IN (
      SELECT * FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])))
ORDER BY tn.nspname, c.relname, t.tgname
"""

#: badges_badge as the connection's search_path finds it (as the original's Django app does), with its columns
_ORIGINAL_TABLE_SQL = """
SELECT n.nspname, c.relname,
       pg_catalog.array_agg(a.attname::text ORDER BY a.attnum),
       pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, NULL) ORDER BY a.attnum)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = pg_catalog.to_regclass(%s) AND c.relkind IN ('r', 'p')
GROUP BY n.nspname, c.relname
"""
