"""Backoff: full jitter, capped, and still a number after any length of outage (pure)."""

from __future__ import annotations

import random

from badged.backoff import Backoff


def test_delays_grow_up_to_the_cap_and_never_below_half_the_base() -> None:
    backoff = Backoff(base=0.5, cap=30.0, _random=random.Random(7))
    delays = [backoff.next_delay() for _ in range(20)]
    assert all(0.25 <= delay <= 30.0 for delay in delays)
    assert max(delays[:2]) <= 1.0, "the first retries come quickly"


def test_a_days_long_outage_keeps_backing_off_at_the_cap() -> None:
    # 2 ** 1024 does not fit a float: this raised OverflowError after 1,024 failures (~4.5 h at the cap)
    backoff = Backoff(base=0.5, cap=30.0, _random=random.Random(7))
    delays = [backoff.next_delay() for _ in range(5_000)]
    assert all(0.25 <= delay <= 30.0 for delay in delays[1_000:])
    assert backoff.attempts == 5_000


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base=0.5, cap=30.0, _random=random.Random(7))
    for _ in range(2_000):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.5
