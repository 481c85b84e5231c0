"""The plpgsql of a trigger function: every badge of one table and kind of write, checked at once.

Per written row the function:

1. reads the user id (per ``user_field``: each user field is a *section* of its own);
2. looks up, in one index lookup, which of the section's badges the user already holds,
   and stops there if they hold them all — the cheap path first;
3. takes the user's advisory key without waiting (``locks``); if another transaction
   is checking the same user right now, it defers the check to ``badged run`` instead
   (in a SERIALIZABLE transaction it defers every check: it reads nothing more);
4. evaluates the conditions of the others: plain expressions (``hit_views > 1000``) as
   plpgsql IFs, which run no query, and every condition that runs a query in **one**
   query (``CASE`` skips held badges; aggregate tails over the same FROM/WHERE, such
   as bronze/silver/gold on one count, share one subquery with ``FILTER``s), because a
   query per row is what a trigger costs most. All of it inside one read-only
   exception guard: if any condition fails, each is evaluated again in a guard of its
   own, so only the failing badge is skipped (with a WARNING) and the application's
   write never fails;
5. inserts the earned awards in one statement (``ON CONFLICT DO NOTHING``) and NOTIFYs
   each new one; writes what it had to defer to ``<schema>.recheck``.

Everything is composed with ``psycopg.sql``; conditions come from pglast's deparser
(see ``condition``). Only badged's own template text is ever indented, never a
condition, so a string literal in a condition keeps its exact bytes.

Pure: no database.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from psycopg import sql

from badged.awarding import award_table, notify_payload
from badged.condition import Event, shared_select
from badged.locks import try_function_lock, try_user_lock
from badged.names import search_path_for
from badged.objects import Table
from badged.own_schema import RECHECK_TABLE
from badged.routines import FunctionName, Routines
from badged.settings import Settings
from badged.spec import Badge


def function_search_path(table: Table) -> tuple[str, ...]:
    """The search_path every trigger function (and everything that evaluates conditions like it) runs with.

    Nothing a less trusted role can create objects in (see ``names``).
    """
    return search_path_for(table.schema, table.schema_writers)


def reads_other_rows(badge: Badge, routines: Routines, search_path: tuple[str, ...]) -> bool:
    """Whether the condition's value can depend on rows other than the changed one (then writes can race)."""
    condition = badge.condition
    if condition.row_local:
        return False
    if condition.runs_query:
        return True
    return not all(routines.is_builtin(name, search_path) for name in condition.calls)


def scoped_to_user(badge: Badge, table: Table, routines: Routines, search_path: tuple[str, ...]) -> bool:
    """Whether every row the condition reads belongs to the changed row's user, in the trigger's own table.

    Then every write that can change its answer is a check of the same user, and the
    user's key alone orders them (see ``locks``). ``count(id) >= 5 from dummy_sketch
    where user_id = NEW.user_id`` with ``user_field`` ``user_id`` is the common case.
    """
    condition = badge.condition
    if condition.from_table is None or badge.user_field not in condition.scope_columns:
        return False
    schema, name = condition.from_table
    same_table = name == table.name and schema in (None, table.schema) and not name.startswith("pg_")
    only_builtins = all(routines.is_builtin(call, search_path) for call in condition.calls)
    return same_table and only_builtins and not condition.has_subquery


def needs_function_lock(badge: Badge, table: Table, routines: Routines, search_path: tuple[str, ...]) -> bool:
    """Whether checks of *badge* are ordered by their function's key, not the user's alone (see ``locks``)."""
    return reads_other_rows(badge, routines, search_path) and not scoped_to_user(badge, table, routines, search_path)


@dataclass(frozen=True)
class BodyContext:
    """What every part of one function's body needs to know."""

    settings: Settings
    table: Table
    #: the function's name (its key for unscoped checks derives from it)
    name: str
    event: Event
    #: an ``update_of`` function: each badge is checked only when a column it reads changed
    filtered: bool
    routines: Routines

    @property
    def search_path(self) -> tuple[str, ...]:
        return function_search_path(self.table)

    def is_aggregate(self, name: FunctionName) -> bool:
        return self.routines.is_aggregate(name, self.search_path)


def compile_body(badges: tuple[Badge, ...], context: BodyContext) -> tuple[str, tuple[str, ...]]:
    """The function's body, and the queries in it PostgreSQL must be able to PREPARE (see ``FunctionDef``)."""
    sections: dict[str, list[Badge]] = {}
    for badge in badges:
        sections.setdefault(badge.user_field, []).append(badge)
    body = _block(_FUNCTION_BODY, 0).format(guard=_guard(context), sections=sql.SQL("\n\n").join(
        _section(tuple(members), user_field, context, alone=len(badges) == 1)
        for user_field, members in sections.items()
    ))
    probes = tuple(_text(probe) for members in sections.values()
                   if (probe := _query_checks_probe(tuple(members), context)) is not None)
    return "\n" + _text(body) + "\n", probes


def _guard(context: BodyContext) -> sql.Composed:
    """Refuse to run for any table, event or level but the function's own (see ``_GUARD``)."""
    return _block(_GUARD, 4).format(
        op=sql.Literal(context.event.value.upper()), name=sql.Literal(context.table.name),
        schema=sql.Literal(context.table.schema), table=sql.Literal(context.table.display),
        function=sql.Literal(context.name),
        regclass=sql.Literal(sql.Identifier(context.table.schema, context.table.name).as_string(None)))


def changed(columns: tuple[str, ...]) -> str:
    """True when any of *columns* changed its stored value between OLD and NEW.

    Compared as binary images (``record_image_ne``, what ``REFRESH MATERIALIZED VIEW
    CONCURRENTLY`` uses), which needs no ``=`` operator: json, point and xml have none,
    and ``IS DISTINCT FROM`` on them cannot even be created. Values equal by ``=`` but
    stored differently (``1.0`` and ``1.00``, json whitespace) count as changed: one
    more check, never a missed one.
    """
    def row(variable: str) -> sql.Composed:
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.SQL(variable), sql.Identifier(column)) for column in columns))

    return _text(sql.SQL("pg_catalog.record_image_ne({}, {})").format(row("OLD"), row("NEW")))


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


def _block(template: str, indent: int, *, omit: tuple[str, ...] = ()) -> sql.SQL:
    """One of badged's own plpgsql templates (never user input) at *indent* spaces.

    A line holding nothing but ``{name}`` is a nested block that brings its own
    indentation, so it is left as it is (or dropped, when *name* is in *omit*): only
    template text is ever indented, never what is inserted into it.
    """
    lines = []
    for line in textwrap.dedent(template).strip("\n").splitlines():
        alone = _PLACEHOLDER_LINE.fullmatch(line)
        if alone and alone.group(1) in omit:
            continue
        lines.append(line if alone or not line else " " * indent + line)
    return sql.SQL("\n".join(lines))


_PLACEHOLDER_LINE = re.compile(r"\{(\w+)\}")


def _codes(codes: list[str] | tuple[str, ...]) -> sql.Composed:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, codes)))


def _section(badges: tuple[Badge, ...], user_field: str, context: BodyContext, *, alone: bool) -> sql.Composed:
    """The part of a function that serves the badges whose user is *user_field* of the changed row."""
    settings, award = context.settings, award_table(context.settings)
    codes = [badge.code for badge in badges]
    if len(badges) == 1:  # the common case, and the cheapest lookup: the unique index, both columns equal
        held = sql.SQL("_badged_held := ARRAY(SELECT badge FROM {award} WHERE badge = {code} "
                       "AND user_id = _badged_user);").format(award=award, code=sql.Literal(codes[0]))
    else:
        held = sql.SQL("_badged_held := ARRAY(SELECT badge FROM {award} WHERE user_id = _badged_user "
                       "AND badge = ANY ({codes}));").format(award=award, codes=_codes(codes))
    readers = [badge.code for badge in badges if reads_other_rows(badge, context.routines, context.search_path)]
    unscoped = [badge.code for badge in badges
                if needs_function_lock(badge, context.table, context.routines, context.search_path)]
    user_lock = try_user_lock(sql.SQL("_badged_user"), settings)
    if readers:  # lock first: the conditions' queries must start after the key is ours
        evaluation = _block(_CLAIMED, 16).format(
            claim=_claim(codes, unscoped, user_lock, context, indent=16), count=sql.Literal(len(badges)),
            evaluation=_evaluation(badges, context, readers, None, alone=alone, indent=20))
    else:  # row-only conditions cannot race: take the user's key only to award
        evaluation = _evaluation(badges, context, readers, user_lock, alone=alone, indent=16)
    return _block(_SECTION, 4).format(
        codes_comment=sql.SQL(", ".join(codes)),  # codes: letters, digits, _ and -
        user_value=sql.SQL("{}.{}").format(sql.SQL(context.event.changed_row), sql.Identifier(user_field)),
        held=held,
        count=sql.Literal(len(badges)),
        defer_all=_defer_all(badges, context, indent=16),
        evaluation=evaluation,
        recheck=_block(_RECHECK_INSERT, 12).format(
            recheck=sql.SQL("{}.{}").format(sql.Identifier(settings.schema), sql.Identifier(RECHECK_TABLE)),
            table=sql.Literal(context.table.display), event=sql.Literal(context.event.value),
            new_row=sql.SQL("NEW::text" if context.event is not Event.DELETE else "NULL"),
            old_row=sql.SQL("OLD::text" if context.event is not Event.INSERT else "NULL")),
    )


def _evaluation(badges: tuple[Badge, ...], context: BodyContext, readers: list[str],
                lock_to_award: sql.Composable | None, *, alone: bool, indent: int) -> sql.Composed:
    """Evaluate the conditions of the badges not held (nor deferred), award what was earned."""
    inner = indent + 4 if lock_to_award is None else indent + 8
    award = _block(_AWARD, inner).format(insert=_award_insert(context, inner + 4),
                                         guarded_insert=_award_insert(context, inner + 8))
    if lock_to_award is not None:
        award = _block(_AWARD_WHEN_LOCKED, indent + 4).format(lock=lock_to_award, award=award)
    undecided = _block(_DEFER_UNDECIDED, indent).format(defer=_defer(readers, "_badged_earned", indent=indent + 4))
    return _block(_EVALUATION, indent, omit=() if readers else ("undecided",)).format(
        fast=_fast_checks(badges, context, alone=alone, indent=indent + 4),
        careful=sql.SQL("\n").join(_guarded_check(badge, context.filtered, indent=indent + 4) for badge in badges),
        undecided=undecided,
        award=award,
    )


def _award_insert(context: BodyContext, indent: int) -> sql.Composed:
    return _block(_AWARD_INSERT, indent).format(award=award_table(context.settings), payload=notify_payload(
        sql.SQL("_badged_award"), sql.SQL("_badged_code"), sql.SQL("_badged_user"), context.settings))


def _claim(codes: list[str], unscoped: list[str], user_lock: sql.Composable, context: BodyContext, *,
           indent: int) -> sql.Composed:
    """Take the keys this user's checks need, or defer the checks a busy key guards (see ``locks``)."""
    return _block(_CLAIM, indent, omit=() if unscoped else ("function_lock",)).format(
        lock=user_lock, defer=_defer(codes, None, indent=indent + 4),
        function_lock=_block(_CLAIM_FUNCTION, indent).format(
            codes=_codes(unscoped), defer=_defer(unscoped, None, indent=indent + 4),
            lock=try_function_lock(context.name, context.settings)))


def _defer_all(badges: tuple[Badge, ...], context: BodyContext, *, indent: int) -> sql.Composed:
    """Defer every badge not held; in an ``update_of`` function only those whose columns changed, as a check would."""
    if not context.filtered:
        return _defer([badge.code for badge in badges], None, indent=indent)
    return sql.SQL("\n").join(
        _block(_DEFER_ONE, indent).format(unless=_unless_held(badge, True, sql.SQL("_badged_held")),
                                          code=sql.Literal(badge.code))
        for badge in badges)


def _defer(codes: list[str], also_skip: str | None, *, indent: int) -> sql.Composed:
    """Add every code of *codes* the user does not hold (nor has in *also_skip*) to ``_badged_deferred``."""
    unless: sql.Composable = sql.SQL("NOT (_badged_code = ANY (_badged_held))")
    if also_skip:
        unless = sql.SQL("{} AND NOT (_badged_code = ANY ({}))").format(unless, sql.SQL(also_skip))
    return _block(_DEFER, indent).format(codes=_codes(codes), unless=unless)


def _fast_checks(badges: tuple[Badge, ...], context: BodyContext, *, alone: bool, indent: int) -> sql.Composed:
    """Plain expressions as plpgsql IFs (no query at all); all conditions that run queries in ONE query."""
    if alone:
        # The function's only badge: the user does not hold it (or we would not be here), and
        # for update_of the trigger's WHEN has already seen its columns change. Nothing to re-check.
        (badge,) = badges
        return _block(_LONE_CHECK, indent).format(condition=sql.SQL(badge.condition.expression),
                                                  code=sql.Literal(badge.code))
    querying = _querying(badges)
    plain = [badge for badge in badges if badge not in querying]
    checks = [_block(_CHECK, indent).format(unless=_unless_held(badge, context.filtered, sql.SQL("_badged_held")),
                                            condition=sql.SQL(badge.condition.expression),
                                            code=sql.Literal(badge.code))
              for badge in plain]
    if querying:
        checks.append(_block(_QUERY_CHECKS, indent).format(
            query=_query_checks(querying, context, sql.SQL("_badged_held"), indent=indent)))
    return sql.SQL("\n").join(checks)


def _querying(badges: tuple[Badge, ...]) -> list[Badge]:
    """The badges evaluated together by one query (when one alone would run a query anyway, none)."""
    querying = [badge for badge in badges if badge.condition.runs_query]
    return querying if len(querying) > 1 else []


def _query_checks(badges: list[Badge], context: BodyContext, held: sql.Composable, *, indent: int) -> sql.Composed:
    """One query evaluating the conditions of *badges* the user does not hold (``CASE`` skips the others)."""
    shared: dict[tuple[str, tuple[str, ...]], list[Badge]] = {}
    for badge in badges:
        if (key := badge.condition.share_key(context.routines, context.search_path)) is not None:
            shared.setdefault(key, []).append(badge)
    shared = {key: members for key, members in shared.items() if len(members) > 1}
    grouped = {badge.code for members in shared.values() for badge in members}
    singles = [badge for badge in badges if badge.code not in grouped]
    # The codes in the order of the results array: single conditions first, then each shared group.
    order = [badge.code for badge in singles] + [badge.code for members in shared.values() for badge in members]
    margin = " " * (indent + 8)
    parts: list[sql.Composable] = []
    if singles:
        parts.append(sql.SQL("ARRAY[\n{}\n{}]::boolean[]").format(sql.SQL(",\n").join(
            sql.SQL("{}    {}").format(sql.SQL(margin), _single_result(badge, context.filtered, held))
            for badge in singles), sql.SQL(margin)))
    parts += [_shared_results(query, members, context, held, margin)
              for (query, _scope), members in shared.items()]
    return sql.SQL(
        "ARRAY(\n"
        "{m}SELECT _badged_r._badged_c\n"
        "{m}FROM ROWS FROM (pg_catalog.unnest({order}), pg_catalog.unnest(\n"
        "{m}{results}\n"
        "{m})) AS _badged_r (_badged_c, _badged_ok)\n"
        "{m}WHERE _badged_r._badged_ok AND NOT (_badged_r._badged_c = ANY ({held})))"
    ).format(m=sql.SQL(" " * (indent + 4)), order=_codes(order), results=sql.SQL(" || ").join(parts), held=held)


def _query_checks_probe(badges: tuple[Badge, ...], context: BodyContext) -> sql.Composed | None:
    """The one query of a section's checks, as PostgreSQL must be able to PREPARE it (NEW/OLD as empty rows)."""
    querying = _querying(badges)
    if not querying:
        return None
    empty_row = sql.SQL("(SELECT * FROM {} WHERE false)").format(context.table.qualified)
    return sql.SQL('SELECT {query} FROM {row} AS "new", {row} AS "old"').format(
        query=_query_checks(querying, context, sql.SQL("'{}'::text[]"), indent=0), row=empty_row)


def _unless_held(badge: Badge, filtered: bool, held: sql.Composable) -> sql.Composed:
    """When *badge* still has to be checked: the user does not hold it (and, filtered, its columns changed)."""
    unless = sql.SQL("NOT ({} = ANY ({}))").format(sql.Literal(badge.code), held)
    if filtered:  # only when one of the columns it reads changed, as a trigger of its own would
        unless = sql.SQL("{} AND {}").format(unless, sql.SQL(changed(badge.condition.new_columns)))
    return unless


def _single_result(badge: Badge, filtered: bool, held: sql.Composable) -> sql.Composed:
    # CASE: the condition of a badge the user holds is never evaluated (its subqueries never run).
    return sql.SQL("CASE WHEN {unless} THEN {condition} END").format(
        unless=_unless_held(badge, filtered, held), condition=sql.SQL(badge.condition.expression))


def _shared_results(shared_query: str, badges: list[Badge], context: BodyContext, held: sql.Composable,
                    margin: str) -> sql.Composed:
    """One query computing every condition of *badges* (unless the user holds them all)."""
    members = [(badge.condition.target or "", badge.condition.where) for badge in badges]
    return sql.SQL(
        "CASE WHEN NOT ({held} @> {codes}) THEN ({query})\n"
        "{margin}ELSE pg_catalog.array_fill(NULL::boolean, ARRAY[{count}]) END"
    ).format(held=held, codes=_codes([badge.code for badge in badges]),
             query=sql.SQL(shared_select(shared_query, members, context.is_aggregate)),
             margin=sql.SQL(margin), count=sql.Literal(len(badges)))


def _guarded_check(badge: Badge, filtered: bool, *, indent: int) -> sql.Composed:
    return _block(_GUARDED_CHECK, indent).format(unless=_unless_held(badge, filtered, sql.SQL("_badged_held")),
                                                 condition=sql.SQL(badge.condition.expression),
                                                 code=sql.Literal(badge.code))


_FUNCTION_BODY = """
    #variable_conflict use_column
    DECLARE
        _badged_user text;
        _badged_held text[];
        _badged_earned text[];
        _badged_deferred text[];
        _badged_exact boolean;
        _badged_award bigint;
        _badged_code text;
    BEGIN
    {guard}
    {sections}
        RETURN NULL;
    END
"""

# The function may be attached to any table by anyone who may execute it (EXECUTE is
# revoked from PUBLIC, but a superuser or an owner could): it then awards nothing. It
# warns instead of raising, so that an application's write never fails because of badged
# (a table renamed before badge.json follows lands here too). TG_TABLE_NAME is a
# partition's own name when the trigger was cloned onto one, so a different name is
# checked against the table's partitions first (to_regclass: NULL, never an error).
_GUARD = """
    IF TG_OP <> {op} OR TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER'
        OR ((TG_TABLE_NAME <> {name} OR TG_TABLE_SCHEMA <> {schema})
            AND NOT EXISTS (SELECT FROM pg_catalog.pg_partition_ancestors(TG_RELID) AS a
                            WHERE a.relid OPERATOR(pg_catalog.=) pg_catalog.to_regclass({regclass}))) THEN
        RAISE WARNING 'badged: % serves AFTER % FOR EACH ROW on %, not % % FOR EACH % on %.%: nothing awarded',
            {function}, {op}, {table}, TG_WHEN, TG_OP, TG_LEVEL, TG_TABLE_SCHEMA, TG_TABLE_NAME;
        RETURN NULL;
    END IF;
"""

_SECTION = """
    -- badges {codes_comment}
    _badged_user := ({user_value})::text;
    IF _badged_user IS NOT NULL THEN
        -- Cheap path first: which of these badges the user already holds, in one index lookup.
        {held}
        IF pg_catalog.cardinality(_badged_held) < {count} THEN
            _badged_deferred := '{{}}';
            IF pg_catalog.current_setting('transaction_isolation') = 'serializable' THEN
                -- Every read here would join PostgreSQL's serializable conflict checks and could
                -- fail the application's write: leave the whole check to badged run.
    {defer_all}
            ELSE
                -- READ COMMITTED: every query below sees what committed before it started.
                _badged_exact := pg_catalog.current_setting('transaction_isolation') = 'read committed';
    {evaluation}
            END IF;
    {recheck}
        END IF;
    END IF;
"""

# Checks of this user (or of this function's unscoped badges) running in another
# transaction right now could hide rows from this one: never wait for them, leave
# the check to badged run instead (see badged.locks).
_CLAIMED = """
    {claim}
    _badged_held := _badged_held || _badged_deferred;
    IF pg_catalog.cardinality(_badged_held) < {count} THEN
    {evaluation}
    END IF;
"""

_CLAIM = """
    IF NOT {lock} THEN
    {defer}
    {function_lock}
    END IF;
"""

_CLAIM_FUNCTION = """
    ELSIF NOT (_badged_held @> {codes}) AND NOT {lock} THEN
    {defer}
"""

_DEFER = """
    FOREACH _badged_code IN ARRAY {codes} LOOP
        IF {unless} THEN
            _badged_deferred := _badged_deferred || _badged_code;
        END IF;
    END LOOP;
"""

_DEFER_ONE = """
    IF {unless} THEN
        _badged_deferred := _badged_deferred || {code}::text;
    END IF;
"""

_EVALUATION = """
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
    {undecided}
    IF pg_catalog.cardinality(_badged_earned) > 0 THEN
    {award}
    END IF;
"""

# REPEATABLE READ or SERIALIZABLE: the snapshot is older than commits that may matter,
# so a "no" from a condition that reads other rows is not final.
_DEFER_UNDECIDED = """
    IF NOT _badged_exact THEN
    {defer}
    END IF;
"""

_AWARD_INSERT = """
    FOR _badged_award, _badged_code IN
        INSERT INTO {award} (badge, user_id) SELECT pg_catalog.unnest(_badged_earned), _badged_user
        ON CONFLICT (badge, user_id) DO NOTHING
        RETURNING id, badge
    LOOP
        -- The doorbell only: listeners read the award table.
        PERFORM {payload};
    END LOOP;
"""

# Awards are inserted only while holding the user's key, so no other transaction has
# an uncommitted award of this user that ON CONFLICT would wait for (see badged.locks).
_AWARD = """
    IF _badged_exact THEN
    {insert}
    ELSE
        BEGIN  -- an award committed after this snapshot makes ON CONFLICT fail (40001)
    {guarded_insert}
        EXCEPTION WHEN serialization_failure OR unique_violation THEN
            _badged_deferred := _badged_deferred || _badged_earned;
        END;
    END IF;
"""

_AWARD_WHEN_LOCKED = """
    IF {lock} THEN
    {award}
    ELSE
        _badged_deferred := _badged_deferred || _badged_earned;
    END IF;
"""

_RECHECK_INSERT = """
    IF pg_catalog.cardinality(_badged_deferred) > 0 THEN
        INSERT INTO {recheck} (trigger_table, event, user_id, badges, new_row, old_row)
        VALUES ({table}, {event}, _badged_user, _badged_deferred, {new_row}, {old_row});
    END IF;
"""

_CHECK = """
    IF {unless} THEN
        IF ({condition}) THEN
            _badged_earned := _badged_earned || {code}::text;
        END IF;
    END IF;
"""

_LONE_CHECK = """
    IF ({condition}) THEN
        _badged_earned := ARRAY[{code}::text];
    END IF;
"""

# Every condition that runs a query, in one query: a query per written row is what a
# trigger costs most. CASE leaves the conditions of held badges unevaluated (their
# subqueries never run); aggregate tails over the same rows share one subquery.
_QUERY_CHECKS = """
    _badged_earned := _badged_earned || {query};
"""

_GUARDED_CHECK = """
    IF {unless} THEN
        BEGIN
            IF ({condition}) THEN
                _badged_earned := _badged_earned || {code}::text;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'badged: condition of badge % failed on %.%: % (SQLSTATE %)',
                {code}, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM, SQLSTATE;
        END;
    END IF;
"""
