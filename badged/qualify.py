"""Badges whose conditions name every table, function and type with its schema (see ``names``).

What the database says exists (``catalog.read_names``) decides each schema; this
module rewrites the conditions and collects, per badge, why one cannot be (a name in
two schemas, a volatile function not allowed). Pure: no database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from badged.condition import qualified
from badged.errors import Problem
from badged.names import KnownNames, Name, resolve
from badged.objects import Table
from badged.spec import Badge


def wanted_names(badges: tuple[Badge, ...], tables: Mapping[str, Table | None]
                 ) -> tuple[set[str], set[Name], set[tuple[str | None, str]]]:
    """(schemas, names, calls) ``catalog.read_names`` must look up for *badges*."""
    schemas = {"pg_catalog"} | {table.schema for table in tables.values() if table is not None}
    names = {name for badge in badges for name in badge.condition.names}
    calls = {call for badge in badges for call in badge.condition.calls}
    return schemas, names, calls


def qualify_badges(badges: tuple[Badge, ...], tables: Mapping[str, Table | None], known: KnownNames,
                   allow_volatile: frozenset[str]) -> tuple[tuple[Badge, ...], list[Problem]]:
    """*badges* with qualified conditions (those on unknown tables unchanged), and every problem found."""
    result, problems = [], []
    for badge in badges:
        table = tables.get(str(badge.table))
        if table is None:  # reported by reconcile's checks of the tables
            result.append(badge)
            continue
        resolution = resolve(badge.condition.names, badge.condition.calls, table.schema, known, allow_volatile)
        problems += [Problem(problem, badge.index, badge.code, "condition") for problem in resolution.problems]
        condition = qualified(badge.condition, badge.event, resolution.qualification)
        result.append(dataclasses.replace(badge, condition=condition) if condition is not badge.condition else badge)
    return tuple(result), problems
