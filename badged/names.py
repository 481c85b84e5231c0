"""Which schema each name a condition writes without one belongs to, decided at reconcile time.

A trigger function runs as the reconciling role inside every application write, so
nothing in it may be looked up where a less trusted role can create objects: a
``public.cardinality(text[])`` or ``public.lower(varchar)`` created there would run with
the reconciler's rights. A schema is **trusted** when no role but the reconciling role
(its members) and superusers may create objects in it (``catalog`` reads who may).

* Every function's ``search_path`` is ``pg_catalog, <table's schema>, pg_temp`` when the
  table's schema is trusted (names, overloads and operators resolve as they always did),
  and ``pg_catalog, pg_temp`` when it is not.
* Every table, function and type a condition names without a schema is resolved here,
  once, as the trigger would (in ``pg_catalog``, then in the table's schema), and written
  with its schema; a name in neither is left for PostgreSQL's analysis to refuse.
* A name in both: in a trusted schema it is left to the ``search_path`` (as PostgreSQL
  resolves overloads across both); in an untrusted one ``pg_catalog``'s is taken, so that
  nobody can block or redirect a badge by creating a same-named function there.
* A function that lives in an untrusted schema (found there, or written ``schema.f``) is
  refused: whoever may create there may add an overload that PostgreSQL would prefer.
* A function PostgreSQL marks ``VOLATILE`` (``pg_sleep``, ``nextval``, ``set_config``,
  ``pg_terminate_backend``, ``lo_import``, ``random``, ``clock_timestamp``…) is refused
  unless the operator allowed it by name: a condition is a predicate, and a volatile
  function may write, wait or change the application's session.

Pure: no database (``catalog.read_names`` reads what this decides on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

#: the schema every function searches first: only superusers can create objects in it
TRUSTED_SCHEMA = "pg_catalog"
#: the search_path of every trigger function on a table in an untrusted schema
PINNED_SEARCH_PATH = (TRUSTED_SCHEMA, "pg_temp")


def search_path_for(table_schema: str, writers: tuple[str, ...]) -> tuple[str, ...]:
    """The search_path of a trigger function on a table in *table_schema* (see the module's rules)."""
    if writers or table_schema == TRUSTED_SCHEMA:
        return PINNED_SEARCH_PATH
    return (TRUSTED_SCHEMA, table_schema, "pg_temp")


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
    #: (schema, roles other than the reconciling one that may create objects there) for every
    #: schema looked at but pg_catalog; roles empty: trusted
    writers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def writers_of(self, schema: str) -> tuple[str, ...]:
        return dict(self.writers).get(schema, ()) if schema != TRUSTED_SCHEMA else ()

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
    """Qualify *names* (a condition's unqualified names); check *calls* (every function it calls)."""
    trusted = not known.writers_of(table_schema)
    qualification: dict[Name, str] = {}
    for name in sorted(set(names)):
        homes = known.homes(name, table_schema)
        if len(homes) == 1 and not (name[0] is NameKind.TYPE and homes[0] == TRUSTED_SCHEMA):
            # (a pg_catalog type is found first anyway, and pglast writes pg_catalog.bpchar as char(1))
            qualification[name] = homes[0]
        elif len(homes) > 1 and not trusted and name[0] is NameKind.FUNCTION:
            qualification[name] = TRUSTED_SCHEMA
    problems: list[str] = []
    for schema, function in sorted({_home(call, qualification) for call in calls}, key=str):
        if schema is None:
            continue
        writers = known.writers_of(schema)
        if writers:
            problems.append(f"calls {schema}.{function}, in schema {schema}, where {', '.join(writers)} may create "
                            "functions too, and so an overload the trigger would run with the reconciling role's "
                            f"rights: move it to a schema only the reconciling role can create in, or REVOKE CREATE "
                            f"ON SCHEMA {schema} from them")
        elif (schema, function) in known.volatile and not ({f"{schema}.{function}", function} & allow_volatile):
            problems.append(f"calls {schema}.{function}, which PostgreSQL marks VOLATILE (it may write, wait or "
                            "change the application's session); a condition may only read: if this one only "
                            f"reads, allow it with --allow-volatile {schema}.{function}")
    return Resolution(tuple(sorted(qualification.items())), tuple(problems))


def _home(call: tuple[str | None, str], qualification: Mapping[Name, str]) -> tuple[str | None, str]:
    """Where a call goes: its written or resolved schema (None: left to a trusted search_path, or unknown)."""
    schema, function = call
    return (schema if schema is not None else qualification.get((NameKind.FUNCTION, function)), function)
