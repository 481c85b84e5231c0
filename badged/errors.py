"""The exceptions badged raises, as one small tree.

    BadgedError                      every error badged raises on purpose
    ├── PermanentError               retrying cannot help: fix the input first
    │   ├── ConfigError              a bad flag or environment variable
    │   ├── SpecError                badge.json is invalid (carries every problem found)
    │   ├── DatabaseMismatch         badge.json names tables/columns the database lacks
    │   ├── ApplyFailed              PostgreSQL refused a step of the plan (all rolled back)
    │   └── SourceError              badge.json (file or ConfigMap) cannot be read
    └── TemporaryError               may succeed later: retry with backoff
        ├── ConnectionFailed         the database cannot be reached
        └── LockTimeout              another transaction held a lock too long

Callers decide on retries from ``PermanentError``/``TemporaryError``, never from
the concrete class. Messages are single sentences meant for people; they never
contain a password.
"""

from __future__ import annotations

from dataclasses import dataclass

#: what an error about a missing badge.json tells people to do
BADGES_HINT = "name badge.json with --badges or BADGED_BADGES"


class BadgedError(Exception):
    """Base of every error badged raises on purpose."""


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


class ApplyFailed(PermanentError):
    """PostgreSQL refused a statement of the plan; the whole transaction was rolled back."""


class SourceError(PermanentError):
    """The source of badge.json cannot be read (missing file, no permission, ConfigMap gone)."""


class ConnectionFailed(TemporaryError):
    """The database could not be reached or the connection was lost."""


class LockTimeout(TemporaryError):
    """A lock was not granted within lock_timeout; nothing was applied."""
