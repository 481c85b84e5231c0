"""Running a case on both sides, and reducing a failing case to the badges and writes it needs.

Hypothesis finds failing cases; its shrinker, at ~0.1 s per case here, runs out of its time before it has
removed the badges and writes a failure does not need. ``reduce`` removes them greedily instead (one badge,
one transaction, one statement at a time, keeping each removal after which the case still fails), which
takes seconds, and the report then shows only what matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import psycopg
from psycopg import errors

from tests.differential import oracle
from tests.differential.case import Case
from tests.helpers import apply

#: what a failed statement may raise; its transaction then rolled back on both sides alike
EXPECTED_FAILURES = (errors.UniqueViolation, errors.CardinalityViolation)

_DIFFERENCE = """
SELECT 'badged only', badge, user_id FROM (SELECT badge, user_id FROM badged.award
                                           EXCEPT SELECT badge, user_id FROM oracle.award) AS b
UNION ALL
SELECT 'oracle only', badge, user_id FROM (SELECT badge, user_id FROM oracle.award
                                           EXCEPT SELECT badge, user_id FROM badged.award) AS o
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class Failure:
    """Where a case went wrong: after which transaction (0: reconcile refused it), and how."""

    after: int
    what: str


@dataclass
class Tally:
    """What the passing cases covered, for the test's summary line."""

    cases: int = 0
    badges: int = 0
    writes: int = 0
    refused: int = 0
    awards: int = 0


def run(dsn: str, case: Case, tally: Tally | None = None) -> Failure | None:
    """Install *case* on both sides, write its transactions, compare awards after each one."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = error")  # a failing condition's WARNING is expected here
        conn.execute("TRUNCATE posts, notes, entries")
        try:
            apply(dsn, case.badge_json())
        except Exception as exc:  # any refusal of a valid generated badge set is a failure to report
            return Failure(0, f"reconcile refused the badge set: {type(exc).__name__}: {exc}")
        conn.execute("TRUNCATE badged.award")
        oracle.install(conn, list(case.badges))
        refused = 0
        for number, statements in enumerate(case.transactions, start=1):
            try:
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement)
            except EXPECTED_FAILURES:
                refused += 1
            difference = conn.execute(_DIFFERENCE).fetchall()
            if difference:
                what = ", ".join(f"{side}: {badge} for user {user}" for side, badge, user in difference)
                return Failure(number, what)
        if tally is not None:
            tally.cases += 1
            tally.badges += len(case.badges)
            tally.writes += case.write_count
            tally.refused += refused
            tally.awards += len(oracle.awards(conn))
    return None


def reduce(dsn: str, case: Case, failure: Failure) -> tuple[Case, Failure]:
    """The smallest case found by removing badges, transactions and statements while it still fails."""
    case = replace(case, transactions=case.transactions[:failure.after])
    progress = True
    while progress:
        progress = False
        for candidate in _smaller(case):
            found = run(dsn, candidate)
            if found is not None:
                case, failure, progress = candidate, found, True
                case = replace(case, transactions=case.transactions[:failure.after])
                break
    return case, failure


def _smaller(case: Case) -> Iterator[Case]:
    """Every case one badge, one transaction or one statement smaller."""
    for index in range(len(case.badges)):
        if len(case.badges) > 1:
            yield replace(case, badges=case.badges[:index] + case.badges[index + 1:])
    for index in range(len(case.transactions)):
        yield replace(case, transactions=case.transactions[:index] + case.transactions[index + 1:])
    for index, statements in enumerate(case.transactions):
        for position in range(len(statements) if len(statements) > 1 else 0):
            shorter = statements[:position] + statements[position + 1:]
            yield replace(case, transactions=(*case.transactions[:index], shorter, *case.transactions[index + 1:]))
