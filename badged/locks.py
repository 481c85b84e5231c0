"""How concurrent checks of one user stay exact without ever making an application wait.

The race this prevents (write skew): T1 inserts Ann's 4th sketch while T2 inserts her
5th; each trigger counts the committed rows plus its own and sees 4, and nobody ever
awards Collector. Serializable isolation would catch it by failing a write; badged
must not fail or delay the application, so the triggers use **try-locks that record
a recheck**:

* Before a trigger function evaluates conditions that read other rows for a user, it
  takes ``pg_try_advisory_xact_lock`` on that user's key. It never waits: if another
  transaction holds the key (it is checking the same user right now and has not
  committed), the check is *deferred*: the function writes the badges, the user and
  the changed row to ``<schema>.recheck`` and lets the write go on.
* If it gets the key, no other check of that user is in flight, and every earlier one
  has committed (locks are released after commit is visible), so in READ COMMITTED its
  next query, which takes a fresh snapshot, sees every row they wrote: its answer is
  the one a serial execution would give.
* In REPEATABLE READ its snapshot is older than some of those commits, so a
  condition that reads other rows and comes out false is deferred too; an award it
  makes runs in a subtransaction, because ``ON CONFLICT`` raises a serialization
  failure when the same award was committed after the snapshot.
* In SERIALIZABLE, every read would join PostgreSQL's conflict detection and could
  fail the application's write (measured: 3 of 240 writes of 16 writers), so the
  trigger reads nothing but the held lookup and defers every check; no serializable
  transaction then writes an award, so the lookup never conflicts either.
* Awards are inserted only while holding the user's key (by triggers, ``badged run``'s
  recheck and ``badged backfill`` alike), so no award insert ever waits on another
  transaction's uncommitted award for the same user, and two applications writing
  for users A, B and B, A cannot deadlock through badged.
* ``badged run`` drains the recheck table: it takes the same key (again a try-lock,
  retried on the next pass), so it evaluates only after every transaction that was
  checking that user has ended, and awards what the deferred checks would have.

**Keys.** One key per *user* suffices for conditions whose reads are scoped to the
user in the trigger's own table (``count(id) >= 5 from dummy_sketch where user_id =
NEW.user_id``, with ``user_field`` ``user_id``): every write that changes what such a
check reads is itself a check of that user and takes that key. Conditions that read
other rows in any other way (another table, a subquery, a function that is not
built in, a scope on another column) take in addition one key for their table's
function, which orders every check of them. Conditions that read only the changed
row (``hit_views > 1000``) need a key only to award.

**Bounded.** Users are hashed onto ``STRIPES`` keys, so a statement over 100,000
users takes at most ``STRIPES`` advisory locks (PostgreSQL's lock table holds about
``max_locks_per_transaction * max_connections``, 6,400 by default), and since every
key is held by one transaction at a time, all of badged holds at most ``STRIPES`` plus
one per trigger function, whatever the concurrency. Two users on the same stripe only
defer each other's checks now and then (a recheck, never a wait or a wrong answer).

Pure: SQL expressions only.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from badged.settings import Settings

#: Users are spread over this many keys (a power of two): at 16 busy clients two checks
#: meet on one by chance about 1 % of the time, and a statement over any number of users
#: takes at most this many locks.
STRIPES = 1024


def lock_class(settings: Settings) -> int:
    """The first half of every key badged takes for its schema (the two-int4 advisory lock space)."""
    return _int4(f"badged:{settings.schema}")


def function_key(function_name: str) -> int:
    """The key of a trigger function's checks that are not scoped to one user: negative, apart from stripes."""
    return -1 - (_int4(f"function:{function_name}") & 0x7FFFFFFE)


def user_stripe(user: sql.Composable) -> sql.Composed:
    """The key of a user (given as text): one of ``STRIPES``."""
    return sql.SQL("pg_catalog.int4and(pg_catalog.hashtext({}), {})").format(user, sql.Literal(STRIPES - 1))


def try_user_lock(user: sql.Composable, settings: Settings) -> sql.Composed:
    """True if this transaction now holds *user*'s key (never waits)."""
    return sql.SQL("pg_catalog.pg_try_advisory_xact_lock({}, {})").format(
        sql.Literal(lock_class(settings)), user_stripe(user))


def try_function_lock(function_name: str, settings: Settings) -> sql.Composed:
    """True if this transaction now holds the key of *function_name*'s unscoped checks (never waits)."""
    return sql.SQL("pg_catalog.pg_try_advisory_xact_lock({}, {})").format(
        sql.Literal(lock_class(settings)), sql.Literal(function_key(function_name)))


def user_lock(user: sql.Composable, settings: Settings) -> sql.Composed:
    """Take *user*'s key, waiting (up to lock_timeout) for the transaction that holds it: never in a trigger."""
    return sql.SQL("pg_catalog.pg_advisory_xact_lock({}, {})").format(
        sql.Literal(lock_class(settings)), user_stripe(user))


def lock_users_statement(settings: Settings) -> sql.Composed:
    """Take the keys of the users ``%(users)s`` (text[]), waiting, in key order: for backfill, never a trigger.

    Waiting is safe here: applications only ever *try* keys, so they never wait on this
    transaction, and badged's own waiters take keys in the same order.
    """
    return sql.SQL(
        "SELECT pg_catalog.count(pg_catalog.pg_advisory_xact_lock({cls}, stripe))"
        " FROM (SELECT DISTINCT {stripe} AS stripe FROM pg_catalog.unnest(%(users)s::text[]) AS u (id)"
        " ORDER BY 1) AS keys"
    ).format(cls=sql.Literal(lock_class(settings)), stripe=user_stripe(sql.SQL("u.id")))


def _int4(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)
