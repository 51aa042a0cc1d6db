"""The circuit breaker that pauses claiming after repeated failures.

Plain code with the time passed in; the poller does the waiting. Two kinds of
failure trip it, each counted while consecutive:

* the master failing (unreachable, 5xx, timeouts) — claiming would only add load;
* jobs failing for platform reasons (the encoder crashes or stalls on this
  node) — claiming would burn through the queue, failing every job.

A job that fails by its own fault (``user_error``: a missing input, say)
says nothing about this node: it neither counts nor breaks a run of platform
failures, so no submitter can open the breaker, or hide a broken encoder,
with bad jobs.

::

    CLOSED --threshold failures--> OPEN --cool-down--> HALF_OPEN --probe ok--> CLOSED
                                    ^                      |
                                    +----probe failed------+   (cool-down doubles, up to a cap)

While open nothing is claimed, so the master's queue keeps every job.
"""

from __future__ import annotations

import enum
import math
from typing import Callable

import attrs

from agent.models import FailureReason, JobResult, JobStatus

# Failures that say "this node cannot run jobs now", not "this job is bad".
PLATFORM_REASONS = frozenset({
    FailureReason.RUNTIME_ERROR.value,
    FailureReason.PLATFORM_ERROR.value,
    FailureReason.RESOURCE_ERROR.value,
    FailureReason.STALLED.value,
})


class BreakerState(enum.IntEnum):
    """Values of the ``ffrtmp_circuit_breaker_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


def is_platform_failure(result: JobResult) -> bool:
    return result.status is JobStatus.FAILED and result.failure_reason in PLATFORM_REASONS


@attrs.define
class CircuitBreaker:
    """Decides whether the poller may claim.

    Args:
        threshold: consecutive failures of one kind that open the breaker.
        cooldown: seconds of the first open period; each re-open doubles it.
        max_cooldown: cap on the open period, so a healed master is noticed soon.
        on_change: called with the new state and the reason, for logs and metrics.
    """

    threshold: int = 5
    cooldown: float = 10.0
    max_cooldown: float = 300.0
    on_change: Callable[[BreakerState, str], None] = lambda state, reason: None
    state: BreakerState = BreakerState.CLOSED
    master_failures: int = 0
    job_failures: int = 0
    # Opens since the last close: the cool-down grows with them.
    trips: int = 0
    reopen_at: float = 0.0
    # Half-open: the one probe (a claim, then its job) is under way.
    probing: bool = False

    def claim_delay(self, now: float) -> float:
        """Seconds until a claim may start: 0 now, ``inf`` until a probe ends."""
        if self.state is BreakerState.OPEN:
            if now < self.reopen_at:
                return self.reopen_at - now
            self._move(BreakerState.HALF_OPEN, "cool-down over, probing with one job")
        if self.state is BreakerState.HALF_OPEN and self.probing:
            return math.inf
        return 0.0

    def claim_started(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self.probing = True

    def claim_failed(self, now: float, cause: str) -> None:
        self.master_failures += 1
        if self.state is BreakerState.HALF_OPEN or self.master_failures >= self.threshold:
            self._open(now, f"{self.master_failures} consecutive master failures, last: {cause}")

    def claim_succeeded(self, got_job: bool) -> None:
        self.master_failures = 0
        if self.state is not BreakerState.HALF_OPEN or got_job:
            return  # a claimed job is the probe: its outcome decides
        if self.job_failures < self.threshold:
            self._close("the master answers again")
        else:
            self.probing = False  # no job to test the encoder with yet

    def job_finished(self, now: float, result: JobResult) -> None:
        if is_platform_failure(result):
            self.job_failures += 1
            if self.state is BreakerState.HALF_OPEN or self.job_failures >= self.threshold:
                self._open(now, f"{self.job_failures} consecutive jobs failed on this node, last: {result.error}")
            return
        if result.failure_reason == FailureReason.USER_ERROR.value:
            self.probing = False  # a half-open breaker probes again with the next job
            return
        self.job_failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self._close(f"probe job {result.job_id} ended {result.status.value}")

    def _open(self, now: float, reason: str) -> None:
        seconds = min(self.max_cooldown, self.cooldown * 2**self.trips)
        self.trips += 1
        self.reopen_at = now + seconds
        self.probing = False
        self._move(BreakerState.OPEN, f"{reason}; pausing claims for {seconds:g}s")

    def _close(self, reason: str) -> None:
        self.trips = 0
        self.master_failures = self.job_failures = 0
        self.probing = False
        self._move(BreakerState.CLOSED, reason)

    def _move(self, state: BreakerState, reason: str) -> None:
        self.state = state
        self.on_change(state, reason)
