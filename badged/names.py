"""Which schema each name a condition writes without one belongs to, decided at reconcile time.

A trigger function runs as the reconciling role inside every application write, so
nothing in it may be looked up through a schema an application role can create
objects in: a ``public.cardinality(text[])`` or ``public.lower(text)`` created there
would run with the reconciler's rights. badged therefore pins every function's
``search_path`` to ``pg_catalog, pg_temp`` and writes every table, function and type
a condition names *with its schema*, resolved here once, the way the trigger used to
resolve them at run time: in ``pg_catalog`` first, then in the trigger table's schema.

* A name found in one of the two is qualified with it.
* A name found in both is refused: which one the author meant is not for badged to
  guess, and a copy of a built-in in an application schema is how a hijack starts.
* A name found in neither is left as written: PostgreSQL's analysis of the condition
  (``reconcile``) then refuses it with its own message.
* A function PostgreSQL marks ``VOLATILE`` (``pg_sleep``, ``nextval``, ``set_config``,
  ``pg_terminate_backend``, ``lo_import``, ``random``, ``clock_timestamp``…) is refused
  unless the operator allowed it by name: a condition is a predicate, and a volatile
  function may write, wait or change the application's session.

Operators are resolved in ``pg_catalog`` only (write ``OPERATOR(schema.op)`` for an
extension's). Pure: no database (``catalog.read_names`` reads what this decides on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

#: the schema badged trusts: only superusers can create objects in it
TRUSTED_SCHEMA = "pg_catalog"
#: the search_path of every trigger function and of everything that evaluates conditions like one
PINNED_SEARCH_PATH = (TRUSTED_SCHEMA, "pg_temp")


class NameKind(StrEnum):
    """The kinds of name a condition can write without a schema."""

    RELATION = "relation"
    FUNCTION = "function"
    TYPE = "type"


#: a name as a condition writes it without a schema
Name = tuple[NameKind, str]
#: how a condition's unqualified names resolve: name → schema
Qualification = Mapping[Name, str]


@dataclass(frozen=True)
class KnownNames:
    """Where the names the conditions use exist, as read from the catalog."""

    #: (kind, schema, name) for every object found
    found: frozenset[tuple[NameKind, str, str]] = frozenset()
    #: (schema, function) for every function with a VOLATILE overload
    volatile: frozenset[tuple[str, str]] = frozenset()

    def homes(self, name: Name, table_schema: str) -> tuple[str, ...]:
        """The schemas, of pg_catalog and *table_schema*, in which *name* exists (in lookup order)."""
        kind, text = name
        schemas = dict.fromkeys((TRUSTED_SCHEMA, table_schema))
        return tuple(schema for schema in schemas if (kind, schema, text) in self.found)


@dataclass(frozen=True)
class Resolution:
    """A condition's names, decided: the qualification to rewrite it with, or why it cannot be."""

    qualification: tuple[tuple[Name, str], ...]
    problems: tuple[str, ...]

    @property
    def mapping(self) -> dict[Name, str]:
        return dict(self.qualification)


def resolve(names: Iterable[Name], calls: Iterable[tuple[str | None, str]], table_schema: str,
            known: KnownNames, allow_volatile: frozenset[str]) -> Resolution:
    """Qualify *names* (a condition's unqualified names); check *calls* (every function it calls) for volatility."""
    qualification: dict[Name, str] = {}
    problems: list[str] = []
    for name in sorted(set(names)):
        homes = known.homes(name, table_schema)
        if len(homes) == 1:
            qualification[name] = homes[0]
        elif len(homes) > 1:
            kind, text = name
            problems.append(f"{kind} {text} exists both in {homes[0]} and in {homes[1]}: write "
                            f"{homes[0]}.{text} or {homes[1]}.{text}, so that the trigger cannot be "
                            "redirected by whoever can create objects there")
    for schema, function in sorted({_home(call, qualification) for call in calls}, key=str):
        if schema is None or (schema, function) not in known.volatile:
            continue
        if f"{schema}.{function}" in allow_volatile or function in allow_volatile:
            continue
        problems.append(f"calls {schema}.{function}, which PostgreSQL marks VOLATILE (it may write, wait or "
                        "change the application's session); a condition may only read: if this one only "
                        f"reads, allow it with --allow-volatile {schema}.{function}")
    return Resolution(tuple(sorted(qualification.items())), tuple(problems))


def _home(call: tuple[str | None, str], qualification: Mapping[Name, str]) -> tuple[str | None, str]:
    schema, function = call
    return (schema if schema is not None else qualification.get((NameKind.FUNCTION, function)), function)
