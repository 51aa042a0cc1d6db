"""The circuit breaker's decisions, with time passed in."""

from __future__ import annotations

import math

from agent.models import FailureReason, JobResult, JobStatus
from agent.worker.breaker import BreakerState, CircuitBreaker


def failed(reason: FailureReason, job_id: str = "j") -> JobResult:
    return JobResult(job_id=job_id, node_id="n", status=JobStatus.FAILED, failure_reason=reason.value, error="boom")


def completed(job_id: str = "j") -> JobResult:
    return JobResult(job_id=job_id, node_id="n", status=JobStatus.COMPLETED)


def tripped_breaker() -> tuple[CircuitBreaker, list[BreakerState]]:
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(threshold=3, cooldown=10, max_cooldown=25, on_change=lambda s, r: seen.append(s))
    for _ in range(3):
        breaker.claim_failed(now=0, cause="503")
    return breaker, seen


def test_it_opens_after_threshold_consecutive_master_failures() -> None:
    breaker, seen = tripped_breaker()
    assert seen == [BreakerState.OPEN]
    assert breaker.claim_delay(now=4) == 6


def test_a_success_between_failures_resets_the_count() -> None:
    breaker = CircuitBreaker(threshold=3)
    for _ in range(5):
        breaker.claim_failed(now=0, cause="503")
        breaker.claim_failed(now=0, cause="503")
        breaker.claim_succeeded(got_job=False)
    assert breaker.state is BreakerState.CLOSED


def test_after_the_cooldown_exactly_one_probe_may_claim() -> None:
    breaker, seen = tripped_breaker()
    assert breaker.claim_delay(now=10) == 0
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.claim_started()
    assert breaker.claim_delay(now=11) == math.inf, "a second claim waits for the probe"


def test_a_probe_claim_answered_by_the_master_closes_a_master_trip() -> None:
    breaker, seen = tripped_breaker()
    breaker.claim_delay(now=10)
    breaker.claim_started()
    breaker.claim_succeeded(got_job=False)
    assert seen == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() -> None:
    breaker, _ = tripped_breaker()
    breaker.claim_delay(now=10)
    breaker.claim_started()
    breaker.claim_failed(now=10, cause="503")
    assert breaker.state is BreakerState.OPEN
    assert breaker.claim_delay(now=10) == 20
    breaker.claim_delay(now=30)
    breaker.claim_started()
    breaker.claim_failed(now=30, cause="503")
    assert breaker.claim_delay(now=30) == 25, "capped"


def test_platform_failures_trip_it_but_user_errors_do_not() -> None:
    breaker = CircuitBreaker(threshold=2)
    for _ in range(5):
        breaker.job_finished(now=0, result=failed(FailureReason.USER_ERROR))
    assert breaker.state is BreakerState.CLOSED
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    assert breaker.state is BreakerState.OPEN


def test_a_job_trip_is_probed_by_a_job_not_by_an_empty_claim() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=5)
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    breaker.claim_delay(now=5)
    breaker.claim_started()
    breaker.claim_succeeded(got_job=False)
    assert breaker.state is BreakerState.HALF_OPEN, "an empty queue proves nothing about the encoder"
    assert breaker.claim_delay(now=6) == 0, "the next claim is the probe"
    breaker.claim_started()
    breaker.claim_succeeded(got_job=True)
    assert breaker.claim_delay(now=6) == math.inf
    breaker.job_finished(now=7, result=completed())
    assert breaker.state is BreakerState.CLOSED


def test_a_stalled_encoder_counts_like_a_crash() -> None:
    """stalled is a platform failure: enough in a row open the breaker."""
    breaker = CircuitBreaker(threshold=2)
    breaker.job_finished(now=0, result=failed(FailureReason.STALLED))
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    assert breaker.state is BreakerState.OPEN


def test_user_errors_neither_count_nor_break_a_run_of_platform_failures() -> None:
    """A bad job between two crashes says nothing about the node: the crashes still add up."""
    breaker = CircuitBreaker(threshold=2)
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    breaker.job_finished(now=0, result=failed(FailureReason.USER_ERROR))
    assert breaker.state is BreakerState.CLOSED
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    assert breaker.state is BreakerState.OPEN


def test_a_user_error_probe_leaves_the_breaker_half_open_for_the_next_job() -> None:
    """A probe job that fails by its own fault proves nothing: the next claim probes again."""
    breaker = CircuitBreaker(threshold=1, cooldown=5)
    breaker.job_finished(now=0, result=failed(FailureReason.RUNTIME_ERROR))
    breaker.claim_delay(now=5)
    breaker.claim_started()
    breaker.claim_succeeded(got_job=True)
    breaker.job_finished(now=6, result=failed(FailureReason.USER_ERROR))
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.claim_delay(now=6) == 0, "the next claim is the probe"
