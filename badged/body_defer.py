"""The plpgsql that never waits: claim the user's keys or defer the checks to ``badged run`` through the recheck table.

A trigger function takes its advisory keys with try-locks (see ``locks``); a check it
cannot make exactly now (a busy key, a snapshot too old, a SERIALIZABLE transaction)
is added to ``_badged_deferred`` and written, with the changed row, to
``<schema>.recheck``, which ``badged run`` drains.

Pure: no database.
"""

from __future__ import annotations

from psycopg import sql

from badged.body_checks import HELD, unless_held
from badged.body_sql import block, code_array
from badged.condition import Event
from badged.function_context import BodyContext
from badged.locks import try_function_lock
from badged.own_schema import RECHECK_TABLE
from badged.spec import Badge


def claimed(codes: list[str], unscoped: list[str], user_lock: sql.Composable, evaluation: sql.Composable,
            context: BodyContext, *, indent: int) -> sql.Composed:
    """Take the keys the checks of *codes* need (deferring those a busy key guards), then run *evaluation*.

    The keys come first because the conditions' queries must start after they are
    ours; *unscoped* are the codes that also need the function's key.
    """
    return block(_CLAIMED, indent).format(
        claim=_claim(codes, unscoped, user_lock, context, indent=indent), count=sql.Literal(len(codes)),
        evaluation=evaluation)


def defer_all(badges: tuple[Badge, ...], context: BodyContext, *, indent: int) -> sql.Composed:
    """Defer every badge not held; in an ``update_of`` function only those whose columns changed, as a check would."""
    if not context.filtered:
        return _defer([badge.code for badge in badges], None, indent=indent)
    return sql.SQL("\n").join(
        block(_DEFER_ONE, indent).format(unless=unless_held(badge, True, HELD), code=sql.Literal(badge.code))
        for badge in badges)


def defer_undecided(readers: list[str], *, indent: int) -> sql.Composed:
    """Outside READ COMMITTED, defer the badges of *readers* that were not earned: their "no" is not final."""
    return block(_DEFER_UNDECIDED, indent).format(defer=_defer(readers, "_badged_earned", indent=indent + 4))


def recheck_insert(context: BodyContext, *, indent: int) -> sql.Composed:
    """Write what was deferred, with the changed row, to ``<schema>.recheck`` for ``badged run``."""
    return block(_RECHECK_INSERT, indent).format(
        recheck=sql.Identifier(context.settings.schema, RECHECK_TABLE),
        table=sql.Literal(context.table.display), event=sql.Literal(context.event.value),
        new_row=sql.SQL("NEW::text" if context.event is not Event.DELETE else "NULL"),
        old_row=sql.SQL("OLD::text" if context.event is not Event.INSERT else "NULL"))


def _defer(codes: list[str], also_skip: str | None, *, indent: int) -> sql.Composed:
    """Add every code of *codes* the user does not hold (nor has in *also_skip*) to ``_badged_deferred``."""
    unless: sql.Composable = sql.SQL("NOT (_badged_code = ANY (_badged_held))")
    if also_skip:
        unless = sql.SQL("{} AND NOT (_badged_code = ANY ({}))").format(unless, sql.SQL(also_skip))
    return block(_DEFER, indent).format(codes=code_array(codes), unless=unless)


def _claim(codes: list[str], unscoped: list[str], user_lock: sql.Composable, context: BodyContext, *,
           indent: int) -> sql.Composed:
    """Take the keys this user's checks need, or defer the checks a busy key guards (see ``locks``)."""
    return block(_CLAIM, indent, omit=() if unscoped else ("function_lock",)).format(
        lock=user_lock, defer=_defer(codes, None, indent=indent + 4),
        function_lock=block(_CLAIM_FUNCTION, indent).format(
            codes=code_array(unscoped), defer=_defer(unscoped, None, indent=indent + 4),
            lock=try_function_lock(context.name, context.settings)))


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

# REPEATABLE READ or SERIALIZABLE: the snapshot is older than commits that may matter,
# so a "no" from a condition that reads other rows is not final.
_DEFER_UNDECIDED = """
    IF NOT _badged_exact THEN
    {defer}
    END IF;
"""

_RECHECK_INSERT = """
    IF pg_catalog.cardinality(_badged_deferred) > 0 THEN
        INSERT INTO {recheck} (trigger_table, event, user_id, badges, new_row, old_row)
        VALUES ({table}, {event}, _badged_user, _badged_deferred, {new_row}, {old_row});
    END IF;
"""
