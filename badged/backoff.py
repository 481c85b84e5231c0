"""Exponential backoff with full jitter (AWS's "full jitter"): spreads replicas apart, never spins."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    attempts: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The wait before the next attempt: uniform in [base/2, min(cap, base * 2**attempts)]."""
        # 2.0 ** 1024 overflows a float: past 2**62 the ceiling is the cap anyway (an outage of any length)
        ceiling = min(self.cap, self.base * (2.0 ** min(self.attempts, 62)))
        self.attempts += 1
        return self._random.uniform(min(self.base / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempts = 0
