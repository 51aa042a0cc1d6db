"""Exponential backoff with full jitter."""

from __future__ import annotations

import random

from agent.worker.backoff import Backoff


def test_delays_stay_under_a_doubling_ceiling_up_to_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    for failures, ceiling in enumerate([1, 2, 4, 8, 8, 8]):
        delay = backoff.next()
        assert 0 <= delay <= ceiling, (failures, delay)


def test_jitter_spreads_agents_that_failed_together() -> None:
    """Two agents with different seeds do not retry in lock-step."""
    a, b = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [a.next() for _ in range(5)] != [b.next() for _ in range(5)]


def test_reset_starts_over_after_a_success() -> None:
    backoff = Backoff(base=1.0, cap=100.0, rng=random.Random(3))
    for _ in range(6):
        backoff.next()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next() <= 1.0
