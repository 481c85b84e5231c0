"""PostgreSQL's errors, translated into badged's: the one place that reads a SQLSTATE.

Pure: it looks at an exception psycopg raised and returns the ``BadgedError`` to raise
instead, with its ``Cause`` (see ``errors``) and a sentence that says what happened.
Every caller that talks to the database (``db``, ``apply``, ``reconcile``, ``listen``)
translates with it, so a deadlock is never reported as a lost database, nor a
statement timeout as another transaction's lock.

==========================================  ========================  =================================
SQLSTATE                                    cause                     badged error
==========================================  ========================  =================================
none, on an OperationalError (libpq: no     CONNECTION                ConnectionFailed (temporary)
server, connection lost); class 08; 57P01
admin shutdown, 57P02 crash shutdown,
57P03 cannot connect now, 57P05 idle
session timeout, 25P03 idle in transaction
timeout
class 53 insufficient resources, class 58   RESOURCES                 ConnectionFailed (temporary)
system error (I/O)
25006 read-only transaction (a standby)     READ_ONLY                 ConnectionFailed (temporary)
40001 serialization failure, 40000          SERIALIZATION             Conflict (temporary)
40P01 deadlock detected                     DEADLOCK                  Conflict (temporary)
55P03 lock not available                    LOCK_TIMEOUT              LockTimeout (temporary)
57014 query canceled                        STATEMENT_TIMEOUT         StatementTimeout (temporary)
42501 insufficient privilege                PRIVILEGE                 DatabaseRefused (permanent)
anything else                               REFUSED                   DatabaseRefused (permanent)
==========================================  ========================  =================================

Permanent means "retrying the same thing cannot help until someone changes something";
``badged run`` still retries those with backoff, because what must change (a GRANT)
happens in the database, where no event announces it.
"""

from __future__ import annotations

import psycopg

from badged.errors import (
    BadgedError,
    Cause,
    Conflict,
    ConnectionFailed,
    DatabaseRefused,
    LockTimeout,
    PermanentError,
    StatementTimeout,
    TemporaryError,
)

#: Whole SQLSTATEs first, then two-character classes.
_BY_STATE: dict[str, Cause] = {
    "57P01": Cause.CONNECTION,  # admin_shutdown: terminating connection due to administrator command
    "57P02": Cause.CONNECTION,  # crash_shutdown
    "57P03": Cause.CONNECTION,  # cannot_connect_now: starting up, shutting down, in recovery
    "57P05": Cause.CONNECTION,  # idle_session_timeout
    "25P03": Cause.CONNECTION,  # idle_in_transaction_session_timeout: the server closed the session
    "25006": Cause.READ_ONLY,  # read_only_sql_transaction
    "40000": Cause.SERIALIZATION,  # transaction_rollback
    "40001": Cause.SERIALIZATION,  # serialization_failure
    "40P01": Cause.DEADLOCK,  # deadlock_detected
    "55P03": Cause.LOCK_TIMEOUT,  # lock_not_available
    "57014": Cause.STATEMENT_TIMEOUT,  # query_canceled: statement_timeout, or a cancel request
    "42501": Cause.PRIVILEGE,  # insufficient_privilege
}
_BY_CLASS: dict[str, Cause] = {
    "08": Cause.CONNECTION,  # connection exception
    "53": Cause.RESOURCES,  # insufficient resources: too many connections, disk full, out of memory
    "58": Cause.RESOURCES,  # system error: I/O error, undefined file
}

#: What each cause adds to PostgreSQL's own message, so the sentence says what happened.
_MEANING: dict[Cause, str] = {
    Cause.CONNECTION: "",  # libpq's and PostgreSQL's messages already say it
    Cause.RESOURCES: " (the database server is out of resources)",
    Cause.READ_ONLY: " (the server is read-only: a standby, or a failover in progress)",
    Cause.SERIALIZATION: " (a concurrent transaction conflicted with ours; PostgreSQL rolled ours back)",
    Cause.DEADLOCK: " (a deadlock with another transaction; PostgreSQL rolled ours back to break it)",
    Cause.LOCK_TIMEOUT: " (another transaction held a lock longer than lock_timeout)",
    Cause.STATEMENT_TIMEOUT: " (a statement ran longer than statement_timeout, or was cancelled)",
    Cause.PRIVILEGE: " (the role badged connects as lacks this right: grant it)",
    Cause.REFUSED: "",
}

_TEMPORARY: dict[Cause, type[TemporaryError]] = {
    Cause.CONNECTION: ConnectionFailed,
    Cause.RESOURCES: ConnectionFailed,
    Cause.READ_ONLY: ConnectionFailed,
    Cause.SERIALIZATION: Conflict,
    Cause.DEADLOCK: Conflict,
    Cause.LOCK_TIMEOUT: LockTimeout,
    Cause.STATEMENT_TIMEOUT: StatementTimeout,
}


def cause_of_state(sqlstate: str | None, *, operational: bool = True) -> Cause:
    """The cause of a SQLSTATE; without one, an OperationalError means the connection failed."""
    if not sqlstate:
        return Cause.CONNECTION if operational else Cause.REFUSED
    return _BY_STATE.get(sqlstate) or _BY_CLASS.get(sqlstate[:2]) or Cause.REFUSED


def cause_of(exc: psycopg.Error) -> Cause:
    return cause_of_state(exc.sqlstate, operational=isinstance(exc, psycopg.OperationalError))


def translate(exc: psycopg.Error, doing: str, *, rolled_back: bool = False,
              refused: type[PermanentError] = DatabaseRefused, detail: str | None = None) -> BadgedError:
    """The badged error to raise instead of *exc*, which happened while trying to *doing*.

    *doing* is a verb phrase ("reconcile", "create trigger x on t"); *rolled_back* adds
    "nothing was applied"; *refused* is the class for permanent causes; *detail* replaces
    PostgreSQL's message (e.g. with the password scrubbed).
    """
    cause = cause_of(exc)
    what = (detail if detail is not None else message_of(exc)) + _MEANING[cause]
    applied = "; nothing was applied" if rolled_back else ""
    error: BadgedError
    if cause.temporary:
        error = _TEMPORARY[cause](f"cannot {doing}: {what}{applied}; retry later")
    else:
        error = refused(f"PostgreSQL refused to {doing}: {what}{applied}")
    error.cause = cause
    return error


def temporary_or_raise(exc: psycopg.Error | BadgedError, doing: str) -> TemporaryError:
    """*exc* as badged's error when it is temporary (a loop retries it); raise it when it is permanent."""
    error = translate(exc, doing) if isinstance(exc, psycopg.Error) else exc
    if not isinstance(error, TemporaryError):
        raise error from None
    return error


def message_of(exc: psycopg.Error) -> str:
    """PostgreSQL's primary message, else the first lines of psycopg's."""
    primary = exc.diag.message_primary if exc.diag else None
    if primary:
        return str(primary)
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
