"""Exponential backoff with full jitter, as plain code the poller and reporters share.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads the
retries of many agents after a master restart instead of synchronising them.
"""

from __future__ import annotations

import random

import attrs


@attrs.define
class Backoff:
    """Delays for consecutive failures: ``next()`` after each one, ``reset()`` after a success."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    failures: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.failures = 0
