"""Parked events: what a sink refused for good, kept in badged's schema until replayed. Pure.

A sink that answers "never as it is" (a webhook's 400, 410 or redirect; a message the broker
will not take) must not stop every later event, so the forwarder parks the event and goes
on: one row per (group, award) in ``<schema>.parked_event``, with the status, the reason
and the start of the answer. ``badged events parked`` lists them; ``badged events replay``
marks them, and the forwarder of that group (inside ``badged run``, which holds the sink's
URL and secret) sends them again: delivered, the row goes; refused again, it stays, with
the new answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from badged.event_sql import Statement
from badged.events import AwardEvent, json_fields
from badged.own_schema import AWARD_TABLE, BADGE_TABLE, PARKED_TABLE, tables_exist
from badged.settings import Settings
from badged.sinks import Delivery


@dataclass(frozen=True)
class ParkedEvent:
    """One row of ``parked_event``, with the award it is about."""

    group: str
    award_id: int
    badge: str | None
    user_id: str | None
    sink: str
    status: int | None
    reason: str
    response: str | None
    attempts: int
    parked_at: datetime
    replay_requested_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return json_fields(self)


class ParkingStatements:
    def __init__(self, settings: Settings) -> None:
        self._parked = sql.Identifier(settings.schema, PARKED_TABLE)
        self._award = sql.Identifier(settings.schema, AWARD_TABLE)
        self._badge = sql.Identifier(settings.schema, BADGE_TABLE)
        self.table_name = f"{settings.schema}.{PARKED_TABLE}"
        self._settings = settings

    def table_exists(self) -> Statement:
        return tables_exist(self._settings, PARKED_TABLE)

    def park(self, group: str, sink: str, award_id: int, delivery: Delivery) -> Statement:
        """Keep *award_id* parked for *group*; parked again, it counts one more attempt and its replay is done."""
        return sql.SQL(
            "INSERT INTO {parked} AS p (group_name, award_id, sink, status, reason, response)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (group_name, award_id) DO UPDATE SET sink = EXCLUDED.sink, status = EXCLUDED.status,"
            " reason = EXCLUDED.reason, response = EXCLUDED.response, attempts = p.attempts + 1,"
            " parked_at = pg_catalog.now(), replay_requested_at = NULL"
        ).format(parked=self._parked), (group, award_id, sink, delivery.status, delivery.reason, delivery.response)

    def unpark(self, group: str, award_id: int) -> Statement:
        return sql.SQL("DELETE FROM {} WHERE group_name = %s AND award_id = %s").format(self._parked), \
            (group, award_id)

    def listing(self, group: str | None, limit: int) -> Statement:
        return sql.SQL(
            "SELECT p.group_name, p.award_id, a.badge, a.user_id, p.sink, p.status, p.reason, p.response,"
            " p.attempts, p.parked_at, p.replay_requested_at"
            " FROM {parked} p LEFT JOIN {award} a ON a.id = p.award_id"
            " WHERE %(group)s::text IS NULL OR p.group_name = %(group)s"
            " ORDER BY p.group_name, p.award_id LIMIT %(limit)s"
        ).format(parked=self._parked, award=self._award), {"group": group, "limit": limit}

    @staticmethod
    def read_listing(rows: Sequence[tuple[Any, ...]]) -> list[ParkedEvent]:
        return [ParkedEvent(*row) for row in rows]

    def request_replay(self, group: str | None, award_ids: Sequence[int] | None) -> Statement:
        """Mark parked events for their group's forwarder to send again; returns the rows marked."""
        return sql.SQL(
            "UPDATE {} SET replay_requested_at = pg_catalog.now()"
            " WHERE (%(group)s::text IS NULL OR group_name = %(group)s)"
            " AND (%(ids)s::bigint[] IS NULL OR award_id = ANY (%(ids)s::bigint[]))"
            " RETURNING group_name, award_id"
        ).format(self._parked), {"group": group, "ids": list(award_ids) if award_ids else None}

    def replays_due(self, group: str, limit: int) -> Statement:
        """The events of *group* whose replay was asked for, oldest award first (their award may be gone)."""
        return sql.SQL(
            "SELECT p.award_id, a.id, a.badge, b.name, a.user_id, a.awarded_at, b.trigger_table"
            " FROM {parked} p LEFT JOIN {award} a ON a.id = p.award_id LEFT JOIN {badge} b ON b.code = a.badge"
            " WHERE p.group_name = %s AND p.replay_requested_at IS NOT NULL"
            " ORDER BY p.award_id LIMIT %s"
        ).format(parked=self._parked, award=self._award, badge=self._badge), (group, limit)

    @staticmethod
    def read_replays(rows: Sequence[tuple[Any, ...]]) -> list[tuple[int, AwardEvent | None]]:
        """(award id, its event, or None when the award was deleted since) for each row of ``replays_due``."""
        return [(int(row[0]), AwardEvent(*row[1:]) if row[1] is not None else None) for row in rows]
