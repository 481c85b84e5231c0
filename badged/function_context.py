"""What compiling one trigger function's body needs to know: its table, event, name, settings and search_path.

Pure: no database.
"""

from __future__ import annotations

from dataclasses import dataclass

from badged.condition import Event
from badged.names import search_path_for
from badged.objects import Table
from badged.routines import FunctionName, Routines
from badged.settings import Settings


def function_search_path(table: Table) -> tuple[str, ...]:
    """The search_path every trigger function (and everything that evaluates conditions like it) runs with.

    Nothing a less trusted role can create objects in (see ``names``).
    """
    return search_path_for(table.schema, table.schema_writers)


@dataclass(frozen=True)
class BodyContext:
    """What every part of one function's body needs to know."""

    settings: Settings
    table: Table
    #: the function's name (its key for unscoped checks derives from it)
    name: str
    event: Event
    #: an ``update_of`` function: each badge is checked only when a column it reads changed
    filtered: bool
    routines: Routines

    @property
    def search_path(self) -> tuple[str, ...]:
        return function_search_path(self.table)

    def is_aggregate(self, name: FunctionName) -> bool:
        return self.routines.is_aggregate(name, self.search_path)
