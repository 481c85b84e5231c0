"""Subscribe to badge-earned events: ``badged.subscribe()``, ``badged listen`` and every sink.

Nothing is lost while no one listens, because the award table is the source of
truth and NOTIFY only rings the doorbell:

1. LISTEN on a connection of its own (psycopg's ``notifies()`` needs one), and prove it
   hears a NOTIFY on a private channel of its own (a transaction pooler drops LISTEN);
2. catch up from the award table, in batches, from a ``Position`` (see ``events``);
3. wait for a notification (or a short poll), then read again from the position.

Without a group the position lives in memory and starts "now" (or ``since``).
With ``group=NAME`` it lives in ``<schema>.consumer_group``: a batch is read, handed
over and the position advanced in one transaction holding the group's row
``FOR UPDATE SKIP LOCKED``, so several processes of one group share the work
without duplicates. The position is saved when the consumer asks for the event
after a batch's last, i.e. once it has handled every event of the batch: a crash,
an exception or a ``break`` before that rolls the batch back, and it is handed out
again (at-least-once; exact across clean stops).

``for event in sub`` runs on psycopg's ``Connection``; ``async for event in sub`` runs
natively on its ``AsyncConnection`` (no thread), so cancelling the task that iterates
ends it at once. Both speak the same protocol (``event_sql``). ``with`` / ``async with``
close the subscription and roll back a batch left unfinished.

Temporary database errors (by SQLSTATE, see ``db_errors``: a lost connection, a
restart, a timeout) are retried with backoff on new connections; permanent ones (a
missing right) end the iteration with a clear error, as does a DSN whose LISTEN never
hears its own NOTIFY.

``close()`` lets the batch in hand finish and its position be saved; a query still
unanswered ``CLOSE_GRACE_S`` later (a stalled proxy answers nothing and closes
nothing) has its connection cut (``db.sever``): the batch is rolled back and handed
out again later, and the iteration ends all the same.
"""

from __future__ import annotations

from badged.listen_async import AsyncIteration
from badged.listen_base import CLOSE_GRACE_S, LISTEN_PROBE_TIMEOUT_S
from badged.listen_sync import SyncIteration
from badged.settings import Settings

__all__ = ["CLOSE_GRACE_S", "LISTEN_PROBE_TIMEOUT_S", "Subscription", "subscribe"]


class Subscription(SyncIteration, AsyncIteration):
    """Award events as a plain iterator and an async iterator, reconnecting by itself."""


def subscribe(dsn: str, *, group: str | None = None, since: int | None = None, settings: Settings | None = None,
              batch_size: int = 1000, poll_interval: float = 1.0) -> Subscription:
    """Award events from *dsn*, oldest first: ``for event in subscribe(...)`` or ``async for``.

    *group* keeps the position in the database, shared by every process of that name (at-least-once);
    without it the position lives in memory and starts now, or after award *since*. *settings* name
    badged's schema and channel; *batch_size* awards are read per query; *poll_interval* seconds is the
    longest wait without a NOTIFY. Use it in ``with`` / ``async with`` to close it on the way out.
    """
    return Subscription(dsn, group=group, since=since, settings=settings, batch_size=batch_size,
                        poll_interval=poll_interval)
