"""The exceptions badged raises, as one small tree.

    BadgedError                      every error badged raises on purpose
    ├── PermanentError               retrying cannot help: fix the input first
    │   ├── ConfigError              a bad flag or environment variable
    │   ├── SpecError                badge.json is invalid (carries every problem found)
    │   │   └── DatabaseMismatch     badge.json names tables/columns the database lacks
    │   ├── SourceError              badge.json (file or ConfigMap) cannot be read
    │   └── DatabaseRefused          PostgreSQL refused a statement (a missing right, or one it never accepts)
    │       └── ApplyFailed          ... a step of the plan (all rolled back)
    └── TemporaryError               may succeed later: retry with backoff
        ├── ConnectionFailed         the database cannot be reached, the connection was lost, or the
        │                            server is shutting down, starting, out of resources or read-only
        ├── LockTimeout              another transaction held a lock longer than lock_timeout
        ├── Conflict                 PostgreSQL rolled our transaction back: deadlock or serialization failure
        └── StatementTimeout         a statement ran longer than statement_timeout (or was cancelled)

Callers decide on retries from ``PermanentError``/``TemporaryError``, never from
the concrete class. An error that PostgreSQL caused also carries its ``cause``, a
``Cause`` read from the SQLSTATE in one place (``db_errors.translate``); errors
about badged's own input (badge.json, flags) have no cause. Messages are single
sentences meant for people; they never contain a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: what an error about a missing badge.json tells people to do
BADGES_HINT = "name badge.json with --badges or BADGED_BADGES"


class Cause(StrEnum):
    """What went wrong in the database, read from the SQLSTATE (see ``db_errors``)."""

    CONNECTION = "connection"  # unreachable, lost, or the server is shutting down or starting (08, 57P01-03)
    RESOURCES = "resources"  # the server is out of connections, memory or disk (53), or has an I/O error (58)
    READ_ONLY = "read_only"  # connected to a standby: a failover in progress (25006)
    SERIALIZATION = "serialization"  # a concurrent transaction conflicted with ours (40001)
    DEADLOCK = "deadlock"  # PostgreSQL broke a deadlock by rolling ours back (40P01)
    LOCK_TIMEOUT = "lock_timeout"  # a lock was not granted within lock_timeout (55P03)
    STATEMENT_TIMEOUT = "statement_timeout"  # statement_timeout, or a cancel request (57014)
    PRIVILEGE = "privilege"  # the role lacks a right (42501): permanent until someone grants it
    REFUSED = "refused"  # anything else PostgreSQL will not accept as it is

    @property
    def temporary(self) -> bool:
        return self not in (Cause.PRIVILEGE, Cause.REFUSED)


class BadgedError(Exception):
    """Base of every error badged raises on purpose."""

    #: set on errors PostgreSQL caused (``db_errors.translate``); None for errors about badged's input
    cause: Cause | None = None


class PermanentError(BadgedError):
    """Retrying will not help until someone changes the input."""


class TemporaryError(BadgedError):
    """The same call may succeed later."""


class ConfigError(PermanentError):
    """A command-line flag or environment variable is invalid."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with badge.json, located as precisely as we can."""

    message: str
    index: int | None = None
    code: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.index is not None:
            where.append(f"badge #{self.index}" + (f" ({self.code!r})" if self.code else ""))
        elif self.code:
            where.append(f"badge {self.code!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class SpecError(PermanentError):
    """badge.json is invalid; ``problems`` lists everything found, not only the first."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.lines()[0] if len(problems) == 1 else f"{source}: {len(problems)} problems")

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


class DatabaseMismatch(SpecError):
    """badge.json is valid on its own but does not fit the database (missing table, column, ...)."""


class DatabaseRefused(PermanentError):
    """PostgreSQL refused a statement: the role lacks a right, or the statement can never succeed as it is."""

    cause = Cause.REFUSED


class ApplyFailed(DatabaseRefused):
    """PostgreSQL refused a statement of the plan; the whole transaction was rolled back."""


class SourceError(PermanentError):
    """The source of badge.json cannot be read (missing file, no permission, ConfigMap gone)."""


class ConnectionFailed(TemporaryError):
    """The database could not be reached or the connection was lost (open a new one to retry)."""

    cause = Cause.CONNECTION


class LockTimeout(TemporaryError):
    """A lock was not granted within lock_timeout; nothing was applied."""

    cause = Cause.LOCK_TIMEOUT


class Conflict(TemporaryError):
    """PostgreSQL rolled our transaction back to resolve a deadlock or a serialization failure."""

    cause = Cause.SERIALIZATION


class StatementTimeout(TemporaryError):
    """A statement ran longer than statement_timeout, or was cancelled."""

    cause = Cause.STATEMENT_TIMEOUT


def describe_error(exc: BaseException | None) -> str:
    """``KeyError: 'x'``; the type alone when there is no message; ``unknown`` for None (a task that died of
    nothing it told)."""
    if exc is None:
        return "unknown"
    message = str(exc).strip()
    # a traceback or a multi-line SQL error would break the one-line /readyz reason and the log line
    text = message.splitlines()[0] if message else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
