"""What PostgreSQL says the functions a condition calls are: aggregate, plain function, window, procedure.

Which names are aggregates is the database's knowledge (``pg_proc.prokind``), not a
list's: ``percentile_disc``, ``mode``, ``regr_count``, ``any_value`` or a user-defined
aggregate are aggregates too. ``catalog.read_routines`` reads the kinds of every name
the conditions call; the renderer asks this module, and when in doubt (a name that is
an aggregate in one schema of the search path and a function in another, or that the
database does not know) it treats the name as *not* a known aggregate, so nothing is
shared on a guess.

Pure: no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

#: A function name as a condition writes it: (schema or None when unqualified, name).
FunctionName = tuple[str | None, str]


class RoutineKind(StrEnum):
    """``pg_proc.prokind``."""

    FUNCTION = "f"
    AGGREGATE = "a"
    WINDOW = "w"
    PROCEDURE = "p"


@dataclass(frozen=True)
class Routines:
    """The kinds of every overload of some function names, per schema, as read from ``pg_proc``."""

    #: (schema, name, kind) for every overload found
    found: frozenset[tuple[str, str, RoutineKind]] = frozenset()

    def kinds(self, name: FunctionName, search_path: tuple[str, ...]) -> frozenset[RoutineKind]:
        """The kinds *name* may resolve to with *search_path* (an unqualified name: any schema on it)."""
        schema, function = name
        schemas = (schema,) if schema is not None else search_path
        return frozenset(kind for s, n, kind in self.found if n == function and s in schemas)

    def is_aggregate(self, name: FunctionName, search_path: tuple[str, ...]) -> bool:
        """True only when every overload it may resolve to is an aggregate."""
        return self.kinds(name, search_path) == {RoutineKind.AGGREGATE}

    def is_builtin(self, name: FunctionName, search_path: tuple[str, ...]) -> bool:
        """True when *name* can only resolve to a function of ``pg_catalog`` (which reads no application table)."""
        schema, function = name
        schemas = (schema,) if schema is not None else search_path
        homes = {s for s, n, _ in self.found if n == function and s in schemas}
        return homes == {"pg_catalog"}


#: Nothing known: no name counts as an aggregate or a built-in, so nothing is shared or scoped on a guess.
UNKNOWN = Routines()
