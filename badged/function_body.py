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

This module assembles the function from its parts: ``body_checks`` (steps 2 and 4),
``body_defer`` (step 3 and the recheck of step 5), ``function_keys`` (which key a
badge needs) and ``body_sql`` (the templates' indentation). Everything is composed
with ``psycopg.sql``; conditions come from pglast's deparser (see ``condition``).

Pure: no database.
"""

from __future__ import annotations

from psycopg import sql

from badged.awarding import award_table, notify_payload
from badged.body_checks import fast_checks, guarded_check, held_lookup, query_checks_probe
from badged.body_defer import claimed, defer_all, defer_undecided, recheck_insert
from badged.body_sql import block
from badged.function_context import BodyContext
from badged.function_keys import needs_function_lock, reads_other_rows
from badged.locks import try_user_lock
from badged.marks import text
from badged.spec import Badge


def compile_body(badges: tuple[Badge, ...], context: BodyContext) -> tuple[str, tuple[str, ...]]:
    """The function's body, and the queries in it PostgreSQL must be able to PREPARE (see ``FunctionDef``)."""
    sections: dict[str, list[Badge]] = {}
    for badge in badges:
        sections.setdefault(badge.user_field, []).append(badge)
    # A function with one badge has one section, and its check needs no held test (see fast_checks).
    lone = badges[0] if len(badges) == 1 else None
    body = block(_FUNCTION_BODY, 0).format(guard=_guard(context), sections=sql.SQL("\n\n").join(
        _section(tuple(members), user_field, context, lone=lone)
        for user_field, members in sections.items()
    ))
    probes = tuple(text(probe) for members in sections.values()
                   if (probe := query_checks_probe(tuple(members), context)) is not None)
    return "\n" + text(body) + "\n", probes


def _guard(context: BodyContext) -> sql.Composed:
    """Refuse to run for any table, event or level but the function's own (see ``_GUARD``)."""
    return block(_GUARD, 4).format(
        op=sql.Literal(context.event.value.upper()), name=sql.Literal(context.table.name),
        schema=sql.Literal(context.table.schema), table=sql.Literal(context.table.display),
        function=sql.Literal(context.name),
        regclass=sql.Literal(text(sql.Identifier(context.table.schema, context.table.name))))


def _section(badges: tuple[Badge, ...], user_field: str, context: BodyContext, *,
             lone: Badge | None) -> sql.Composed:
    """The part of a function that serves the badges whose user is *user_field* of the changed row."""
    codes = [badge.code for badge in badges]
    readers = [badge.code for badge in badges if reads_other_rows(badge, context.routines, context.search_path)]
    unscoped = [badge.code for badge in badges
                if needs_function_lock(badge, context.table, context.routines, context.search_path)]
    user_lock = try_user_lock(sql.SQL("_badged_user"), context.settings)
    if readers:  # lock first: the conditions' queries must start after the key is ours
        evaluation = claimed(codes, unscoped, user_lock,
                             _evaluation(badges, context, readers, None, lone=lone, indent=20), context, indent=16)
    else:  # row-only conditions cannot race: take the user's key only to award
        evaluation = _evaluation(badges, context, readers, user_lock, lone=lone, indent=16)
    return block(_SECTION, 4).format(
        codes_comment=sql.SQL(", ".join(codes)),  # codes: letters, digits, _ and -
        user_value=sql.SQL("{}.{}").format(sql.SQL(context.event.changed_row), sql.Identifier(user_field)),
        held=held_lookup(codes, context.settings),
        count=sql.Literal(len(badges)),
        defer_all=defer_all(badges, context, indent=16),
        evaluation=evaluation,
        recheck=recheck_insert(context, indent=12),
    )


def _evaluation(badges: tuple[Badge, ...], context: BodyContext, readers: list[str],
                lock_to_award: sql.Composable | None, *, lone: Badge | None, indent: int) -> sql.Composed:
    """Evaluate the conditions of the badges not held (nor deferred), award what was earned.

    *lock_to_award* is the user's key when it was not claimed before evaluating (the
    conditions read only the changed row): awards are inserted only while holding it.
    """
    inner = indent + 4 if lock_to_award is None else indent + 8
    award = block(_AWARD, inner).format(insert=_award_insert(context, inner + 4),
                                        guarded_insert=_award_insert(context, inner + 8))
    if lock_to_award is not None:
        award = block(_AWARD_WHEN_LOCKED, indent + 4).format(lock=lock_to_award, award=award)
    return block(_EVALUATION, indent, omit=() if readers else ("undecided",)).format(
        fast=fast_checks(badges, context, lone=lone, indent=indent + 4),
        careful=sql.SQL("\n").join(guarded_check(badge, context.filtered, indent=indent + 4) for badge in badges),
        undecided=defer_undecided(readers, indent=indent),
        award=award,
    )


def _award_insert(context: BodyContext, indent: int) -> sql.Composed:
    return block(_AWARD_INSERT, indent).format(award=award_table(context.settings), payload=notify_payload(
        sql.SQL("_badged_award"), sql.SQL("_badged_code"), sql.SQL("_badged_user"), context.settings))


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
