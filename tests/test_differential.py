"""The differential test of the trigger renderer (issue: awards exactly right).

badged's per-table functions are an optimising compiler (held lookup, CASE skipping, shared scans with
FILTERs, ``UPDATE OF``/``WHEN``, guards); its bugs are silent wrong awards. (One session writes here, so
its keys never collide: concurrent writers are ``tests/test_concurrency.py``'s.) Hypothesis generates
badge sets (``tests.differential.conditions``) and transactions (``tests.differential.writes``); each case
is reconciled by badged and installed in the naive oracle (``tests.differential.oracle``) side by side in one
database, and after every transaction the two award sets must be equal. Seeded and bounded for CI;
``pytest --slow`` runs ten times the cases. A failure prints the reduced case as badge.json + SQL.
"""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings

from tests.differential.case import Case, cases
from tests.differential.run import Tally, reduce, run
from tests.differential.schema import SCHEMA_SQL

#: cases per run in CI; ``--slow`` multiplies them by SLOW_FACTOR
CASES = 400
SLOW_FACTOR = 10
#: transactions per case
MIN_WRITES, MAX_WRITES = 8, 30


@pytest.fixture
def differential_dsn(empty_dsn: str) -> str:
    """One database for every case: each case truncates the tables and reconciles its own badge set."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
    return empty_dsn


@pytest.mark.slow
@pytest.mark.timeout(900)  # passing takes about a minute; reducing a failure may take a few more
def test_badged_awards_what_a_naive_trigger_per_badge_awards(differential_dsn: str,
                                                             request: pytest.FixtureRequest) -> None:
    examples = CASES * (SLOW_FACTOR if request.config.getoption("--slow") else 1)

    @seed(20261126)
    # no shrinking, and quiet: ``reduce`` finds the smaller case faster, and the report shows it
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              verbosity=Verbosity.quiet, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=cases(MIN_WRITES, MAX_WRITES))
    def differential(case: Case) -> None:
        failure = run(differential_dsn, case, tally)
        if failure is not None:
            case, failure = reduce(differential_dsn, case, failure)
            raise AssertionError(case.report(failure.after, failure.what))

    tally = Tally()
    differential()
    print(f"differential: {tally.cases} cases, {tally.badges} badges, {tally.writes} writes "
          f"({tally.refused} transactions refused), {tally.awards} awards compared")
    assert tally.cases >= examples
