"""``badge-earned`` events: what listeners, the Python API and webhooks receive. Pure.

An event is read from badged's award table (the source of truth), never taken from
a NOTIFY payload, which is only the doorbell.

Positions make delivery exact. A position says "every award visible in snapshot S
has been delivered, and of those that became visible in snapshot U, the ones up to
(after_txid, after_id)": a delta is read in (txid, id) order, along an index.
Awards are stamped with the awarding transaction's id (``txid``), so
``pg_visible_in_snapshot`` tells exactly which awards committed in between, even
when they commit out of id order (a transaction that took id 10 may commit after
the one that took id 11).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def json_fields(record: Any) -> dict[str, Any]:
    """A flat dataclass *record* as a dict JSON can hold: its fields in order, datetimes in ISO 8601."""
    return {name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in ((f.name, getattr(record, f.name)) for f in dataclasses.fields(record))}


#: A snapshot in which no transaction is visible: "deliver everything".
NOTHING_VISIBLE = "1:1:"


@dataclass(frozen=True)
class AwardEvent:
    """A user earned a badge."""

    award_id: int
    badge: str
    badge_name: str | None
    user_id: str
    awarded_at: datetime
    table: str | None

    def as_dict(self) -> dict[str, Any]:
        return json_fields(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(", ", ": "))


@dataclass(frozen=True)
class Position:
    """How far a listener got (see the module docstring)."""

    snapshot: str
    upto: str | None = None
    after_txid: int = 0
    after_id: int = 0
    #: only awards above this id, in the current delta (``--since``)
    min_id: int = 0

    @classmethod
    def since(cls, award_id: int) -> Position:
        """Every award with an id above *award_id*, whenever it committed."""
        return cls(NOTHING_VISIBLE, min_id=award_id)

    def advance(self, upto: str, batch: list[tuple[int, AwardEvent]], limit: int) -> Position:
        """The position after delivering *batch* ((txid, event) pairs) of the delta ending at *upto*."""
        if len(batch) < limit:
            return Position(upto)  # the delta is exhausted: everything visible in upto is delivered
        txid, last = batch[-1]
        return Position(self.snapshot, upto, txid, last.award_id, self.min_id)
