"""Resolving a condition's names at reconcile time (``badged.names``), without a database."""

from __future__ import annotations

import dataclasses

import pytest

from badged.condition import Event, parse_condition, qualified
from badged.names import KnownNames, NameKind, resolve

KNOWN = KnownNames(frozenset({
    (NameKind.FUNCTION, "pg_catalog", "count"), (NameKind.FUNCTION, "pg_catalog", "lower"),
    (NameKind.FUNCTION, "public", "lower"), (NameKind.FUNCTION, "app", "score"),
    (NameKind.FUNCTION, "pg_catalog", "random"),
    (NameKind.RELATION, "app", "sketch"), (NameKind.TYPE, "pg_catalog", "text"), (NameKind.TYPE, "app", "mood"),
}), frozenset({("pg_catalog", "random"), ("ext", "fetch")}))


@pytest.mark.parametrize("condition, expression", [
    ("count(id) >= 5 from sketch where user_id = NEW.user_id",
     "(SELECT pg_catalog.count(id) >= 5 FROM app.sketch WHERE user_id = new.user_id)"),
    ("score(NEW.id) > 1", "app.score(new.id) > 1"),
    ("feeling::mood = 'happy'", "CAST(new.feeling AS app.mood) = 'happy'"),
    ("title::text = 'x'", "CAST(new.title AS text) = 'x'"),
    ("other.f(NEW.id) and pg_catalog.count(1) > 0 from sketch", None),
    ("code::bpchar = 'abc'", "CAST(new.code AS bpchar) = 'abc'"),
    ("exists (with s as (select 1) select from s, sketch)",
     "EXISTS (WITH s AS (SELECT 1) SELECT FROM s, app.sketch)"),
    ("unknown_function(NEW.id)", "unknown_function(new.id)"),
])
def test_names_are_written_with_the_schema_they_resolve_to(condition: str, expression: str | None) -> None:
    parsed = parse_condition(condition, Event.INSERT)
    resolution = resolve(parsed.names, parsed.calls, "app", KNOWN, frozenset())
    assert resolution.problems == ()
    rewritten = qualified(parsed, Event.INSERT, resolution.qualification)
    if expression is not None:
        assert rewritten.expression == expression
    assert rewritten.names == parsed.names, "the names as written are kept, for the next pass"


def test_a_name_in_both_schemas_is_left_to_a_trusted_search_path() -> None:
    parsed = parse_condition("lower(title) = 'x'", Event.INSERT)
    resolution = resolve(parsed.names, parsed.calls, "public", KNOWN, frozenset())
    assert resolution.problems == () and resolution.qualification == ()


def test_in_an_untrusted_schema_a_name_in_both_is_pg_catalogs() -> None:
    """Nobody can block or redirect a badge by creating a same-named function there."""
    untrusted = dataclasses.replace(KNOWN, writers=(("public", ("PUBLIC",)),))
    parsed = parse_condition("lower(title) = 'x'", Event.INSERT)
    resolution = resolve(parsed.names, parsed.calls, "public", untrusted, frozenset())
    assert resolution.problems == ()
    assert qualified(parsed, Event.INSERT, resolution.qualification).expression == "pg_catalog.lower(new.title) = 'x'"


@pytest.mark.parametrize("condition", ["score(NEW.id) > 1", "app.score(NEW.id) > 1"])
def test_a_function_in_a_schema_others_may_create_in_is_refused(condition: str) -> None:
    untrusted = dataclasses.replace(KNOWN, writers=(("app", ("app_writer", "intern")),))
    parsed = parse_condition(condition, Event.INSERT)
    (problem,) = resolve(parsed.names, parsed.calls, "app", untrusted, frozenset()).problems
    assert problem.startswith("calls app.score, in schema app, where app_writer, intern may create functions too")


@pytest.mark.parametrize("allowed, refused", [
    (frozenset(), ["ext.fetch", "pg_catalog.random"]),
    (frozenset({"random"}), ["ext.fetch"]),
    (frozenset({"pg_catalog.random", "ext.fetch"}), []),
    (frozenset({"public.random"}), ["ext.fetch", "pg_catalog.random"]),
])
def test_volatile_functions_are_refused_unless_allowed(allowed: frozenset[str], refused: list[str]) -> None:
    parsed = parse_condition("random() > ext.fetch(NEW.id)", Event.INSERT)
    problems = resolve(parsed.names, parsed.calls, "app", KNOWN, allowed).problems
    assert [problem.split(",")[0].removeprefix("calls ") for problem in problems] == refused
