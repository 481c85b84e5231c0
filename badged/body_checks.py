"""The plpgsql that decides which badges a user earned: the held lookup, plain IFs, one shared query, guarded retries.

Plain expressions (``hit_views > 1000``) become plpgsql IFs, which run no query; every
condition that runs a query is evaluated in **one** query, because a query per written
row is what a trigger costs most: ``CASE`` skips held badges, and aggregate tails over
the same FROM/WHERE (bronze/silver/gold on one count) share one subquery with
``FILTER``s (see ``condition.shared_select``). When that fails, each condition is
evaluated again in a guard of its own, so only the failing badge is skipped.

Pure: no database.
"""

from __future__ import annotations

from psycopg import sql

from badged.awarding import award_table
from badged.body_sql import block, changed, code_array
from badged.condition import shared_select
from badged.function_context import BodyContext
from badged.settings import Settings
from badged.spec import Badge

#: The plpgsql variable holding the codes the user holds (or whose check was deferred).
HELD = sql.SQL("_badged_held")


def held_lookup(codes: list[str], settings: Settings) -> sql.Composed:
    """Fill ``_badged_held`` with which of *codes* the user already holds, in one index lookup."""
    award = award_table(settings)
    if len(codes) == 1:  # the common case, and the cheapest lookup: the unique index, both columns equal
        return sql.SQL("_badged_held := ARRAY(SELECT badge FROM {award} WHERE badge = {code} "
                       "AND user_id = _badged_user);").format(award=award, code=sql.Literal(codes[0]))
    return sql.SQL("_badged_held := ARRAY(SELECT badge FROM {award} WHERE user_id = _badged_user "
                   "AND badge = ANY ({codes}));").format(award=award, codes=code_array(codes))


def fast_checks(badges: tuple[Badge, ...], context: BodyContext, *, lone: Badge | None,
                indent: int) -> sql.Composed:
    """Plain expressions as plpgsql IFs (no query at all); all conditions that run queries in ONE query.

    *lone* is the function's only badge, if it has one: the user does not hold it (or
    the body would not get here), and for ``update_of`` the trigger's WHEN has already
    seen its columns change, so its condition alone decides.
    """
    if lone is not None:
        return block(_LONE_CHECK, indent).format(condition=sql.SQL(lone.condition.expression),
                                                 code=sql.Literal(lone.code))
    querying = _querying(badges)
    plain = [badge for badge in badges if badge not in querying]
    checks = [block(_CHECK, indent).format(unless=unless_held(badge, context.filtered, HELD),
                                           condition=sql.SQL(badge.condition.expression),
                                           code=sql.Literal(badge.code))
              for badge in plain]
    if querying:
        checks.append(block(_QUERY_CHECKS, indent).format(
            query=_query_checks(querying, context, HELD, indent=indent)))
    return sql.SQL("\n").join(checks)


def guarded_check(badge: Badge, filtered: bool, *, indent: int) -> sql.Composed:
    """*badge*'s condition in a guard of its own: if it fails, only this badge is skipped, with a WARNING."""
    return block(_GUARDED_CHECK, indent).format(unless=unless_held(badge, filtered, HELD),
                                                condition=sql.SQL(badge.condition.expression),
                                                code=sql.Literal(badge.code))


def query_checks_probe(badges: tuple[Badge, ...], context: BodyContext) -> sql.Composed | None:
    """The one query of a section's checks, as PostgreSQL must be able to PREPARE it (NEW/OLD as empty rows)."""
    querying = _querying(badges)
    if not querying:
        return None
    empty_row = sql.SQL("(SELECT * FROM {} WHERE false)").format(context.table.qualified)
    return sql.SQL('SELECT {query} FROM {row} AS "new", {row} AS "old"').format(
        query=_query_checks(querying, context, sql.SQL("'{}'::text[]"), indent=0), row=empty_row)


def unless_held(badge: Badge, filtered: bool, held: sql.Composable) -> sql.Composed:
    """When *badge* still has to be checked: the user does not hold it (and, filtered, its columns changed)."""
    unless = sql.SQL("NOT ({} = ANY ({}))").format(sql.Literal(badge.code), held)
    if filtered:  # only when one of the columns it reads changed, as a trigger of its own would
        unless = sql.SQL("{} AND {}").format(unless, sql.SQL(changed(badge.condition.new_columns)))
    return unless


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
    ).format(m=sql.SQL(" " * (indent + 4)), order=code_array(order), results=sql.SQL(" || ").join(parts), held=held)


def _single_result(badge: Badge, filtered: bool, held: sql.Composable) -> sql.Composed:
    # CASE: the condition of a badge the user holds is never evaluated (its subqueries never run).
    return sql.SQL("CASE WHEN {unless} THEN {condition} END").format(
        unless=unless_held(badge, filtered, held), condition=sql.SQL(badge.condition.expression))


def _shared_results(shared_query: str, badges: list[Badge], context: BodyContext, held: sql.Composable,
                    margin: str) -> sql.Composed:
    """One query computing every condition of *badges* (unless the user holds them all)."""
    members = [(badge.condition.target or "", badge.condition.where) for badge in badges]
    return sql.SQL(
        "CASE WHEN NOT ({held} @> {codes}) THEN ({query})\n"
        "{margin}ELSE pg_catalog.array_fill(NULL::boolean, ARRAY[{count}]) END"
    ).format(held=held, codes=code_array([badge.code for badge in badges]),
             query=sql.SQL(shared_select(shared_query, members, context.is_aggregate)),
             margin=sql.SQL(margin), count=sql.Literal(len(badges)))


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
