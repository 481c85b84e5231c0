"""How awards are written: under the user's key, once per (badge, user), with one NOTIFY each.

The trigger functions (``render``) write awards in plpgsql; ``badged run``'s recheck
and ``badged backfill`` write them with the statements here. All of them insert an
award only while holding the user's key (``locks``), with ``ON CONFLICT DO NOTHING``,
and ring the doorbell (``pg_notify``) for each *new* award only, with the same payload.

Pure: SQL composition only.
"""

from __future__ import annotations

from psycopg import sql

from badged.own_schema import AWARD_TABLE
from badged.settings import Settings


def award_table(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.schema, AWARD_TABLE)


def notify_payload(award_id: sql.Composable, badge: sql.Composable, user: sql.Composable,
                   settings: Settings) -> sql.Composed:
    """The doorbell for one new award: ``pg_notify(channel, {"award_id", "badge", "user_id"})``.

    Small by construction (NOTIFY payloads must stay under 8000 bytes): a user id over
    1 KB is sent as null; listeners read the award table anyway.
    """
    return sql.SQL(
        "pg_catalog.pg_notify({channel}, pg_catalog.json_build_object('award_id', {award_id}, 'badge', {badge}, "
        "'user_id', CASE WHEN pg_catalog.octet_length({user}) <= 1024 THEN {user} END)::text)"
    ).format(channel=sql.Literal(settings.channel), award_id=award_id, badge=badge, user=user)


def award_statement(settings: Settings) -> sql.Composed:
    """Award the badges ``%(badges)s`` (text[]) to the user ``%(user)s`` (text); returns how many were new.

    The caller holds the user's key (``locks.user_lock`` or ``try_user_lock``).
    """
    return sql.SQL("""
        WITH awarded AS (
            INSERT INTO {award} (badge, user_id)
            SELECT pg_catalog.unnest(%(badges)s::text[]), %(user)s::text
            ON CONFLICT (badge, user_id) DO NOTHING
            RETURNING id, badge, user_id
        )
        SELECT pg_catalog.count({notify}) FROM awarded
    """).format(award=award_table(settings),
                notify=notify_payload(sql.SQL("id"), sql.SQL("badge"), sql.SQL("user_id"), settings))


def held_statement(settings: Settings) -> sql.Composed:
    """Which of the badges ``%(badges)s`` the user ``%(user)s`` holds."""
    return sql.SQL("SELECT badge FROM {} WHERE user_id = %(user)s AND badge = ANY (%(badges)s::text[])").format(
        award_table(settings))


def award_users_statement(settings: Settings) -> sql.Composed:
    """Award the badge ``%(badge)s`` to the users ``%(users)s`` (text[]); returns how many were new.

    The caller holds the users' keys (``locks.lock_users_statement``).
    """
    return sql.SQL("""
        WITH awarded AS (
            INSERT INTO {award} (badge, user_id)
            SELECT %(badge)s::text, pg_catalog.unnest(%(users)s::text[])
            ON CONFLICT (badge, user_id) DO NOTHING
            RETURNING id, badge, user_id
        )
        SELECT pg_catalog.count({notify}) FROM awarded
    """).format(award=award_table(settings),
                notify=notify_payload(sql.SQL("id"), sql.SQL("badge"), sql.SQL("user_id"), settings))
