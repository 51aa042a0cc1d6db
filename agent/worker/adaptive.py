"""``--adaptive``: tune the number of concurrent jobs to the throughput the machine gives.

How many encodes to run at once depends on the machine and on the jobs: one
720p x264 batch job already keeps two cores busy, while a 480p real-time
stream uses a tenth of one. So the agent measures instead of guessing. Every
window it reads how many pixels the encoders produced per second (from their
progress, so it is known while jobs run, not only when they end; for a given
mix of jobs it is proportional to the ``bandwidth_mbps`` results report) and
how busy the CPU was, then :class:`AdaptivePolicy` — plain code, no I/O —
moves the limit by one:

- up while each step up raised throughput and the CPU has room;
- back down when a level gave no more than the one below it (it fell, or
  stayed flat: extra jobs that add nothing only make each job slower);
- never up while the CPU is saturated, unless the level above was measured
  better; after a step back it holds for a while, then probes again, since the
  jobs and the machine change.

A window in which some slot stood idle (the queue ran dry) says nothing about
concurrency and changes nothing. :func:`serve_adaptive` is the Trio shell: it
samples the running jobs, sets ``total_tokens`` of the poller's
``CapacityLimiter`` (lowering it lets running jobs finish; it never stops
one), logs each change and exports the limit and the throughput as metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import attrs
import trio

from agent.worker.jobs import RunningJob
from agent.worker.metrics import AgentMetrics

__all__ = [
    "AdaptiveConcurrency",
    "AdaptivePolicy",
    "CpuSampler",
    "LimitDecision",
    "ThroughputMeter",
    "Window",
    "serve_adaptive",
]

log = logging.getLogger(__name__)

# Sampling the running jobs this often catches jobs that start and end
# within one window; the encoders report progress twice a second.
TICK_S = 0.25
# A window counts when every slot was busy for this share of its ticks: the
# moment between one job's result and the next claim must not void it.
FULL_FRACTION = 0.8
# Above this share of all cores busy, more jobs only share the same CPU.
SATURATED_CPU = 0.95
# Relative differences smaller than this are noise on a shared machine.
TOLERANCE = 0.05
# Windows to stay after a step back before probing upwards again.
HOLD_WINDOWS = 6
# The default upper bound: real-time jobs can each need a small slice of a core.
DEFAULT_MAX_JOBS_PER_CORE = 4

_PROC_STAT = Path("/proc/stat")


@attrs.frozen
class Window:
    """What one measuring window saw.

    ``throughput`` is in megapixels encoded per second; ``cpu_busy`` is the
    share of all cores busy (0 to 1), None where the platform does not say.
    """

    limit: int
    throughput: float
    full: bool
    cpu_busy: float | None = None


@attrs.frozen
class LimitDecision:
    """The concurrency limit for the next window, and the reason logged with it."""

    limit: int
    reason: str


@attrs.define
class AdaptivePolicy:
    """Hill-climbing over the concurrency limit, one step per window.

    Args:
        low: the smallest limit it sets.
        high: the largest limit it sets.
        tolerance: relative change that counts as a gain or a loss.
        saturated_cpu: share of the CPU above which it stops raising.
        hold_windows: windows to wait after a step back before probing up.
    """

    low: int
    high: int
    tolerance: float = TOLERANCE
    saturated_cpu: float = SATURATED_CPU
    hold_windows: int = HOLD_WINDOWS
    # Smoothed throughput of each level, as last measured.
    _seen: dict[int, float] = attrs.field(factory=dict)
    _hold: int = 0

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ValueError(f"adaptive bounds must satisfy 1 <= low <= high, not {self.low} and {self.high}")

    def clamp(self, limit: int) -> int:
        return min(self.high, max(self.low, limit))

    def decide(self, window: Window) -> LimitDecision:
        """The limit for the next window, and why."""
        level = window.limit
        if not window.full:
            return LimitDecision(level, "slots stood idle: the queue, not concurrency, set the pace")
        previous = self._seen.get(level)
        here = window.throughput if previous is None else (previous + window.throughput) / 2
        self._seen[level] = here
        below, above = self._seen.get(level - 1), self._seen.get(level + 1)
        saturated = window.cpu_busy is not None and window.cpu_busy >= self.saturated_cpu
        if below is not None and level > self.low and here < below * (1 + self.tolerance):
            self._hold = self.hold_windows
            return LimitDecision(level - 1, f"{here:.1f} Mpx/s at {level} is no better than {below:.1f} at {level - 1}")
        if above is not None and level < self.high and above > here * (1 + self.tolerance):
            return LimitDecision(level + 1, f"{above:.1f} Mpx/s measured at {level + 1} beats {here:.1f}")
        if saturated:
            return LimitDecision(level, f"CPU saturated ({window.cpu_busy:.0%} busy)")
        if self._hold > 0:
            self._hold -= 1
            return LimitDecision(level, "holding after a step back")
        if level < self.high:
            # Measure the level above afresh: the machine may have changed since.
            self._seen.pop(level + 1, None)
            return LimitDecision(level + 1, f"{here:.1f} Mpx/s at {level}, CPU has room: probing {level + 1}")
        return LimitDecision(level, "at the upper bound")


@attrs.define
class ThroughputMeter:
    """Counts the pixels the encoders produced, from their progress snapshots.

    It keeps each job it has seen until it has read that job's last snapshot,
    so the frames a job encodes after the last sample before it ends are
    counted too.
    """

    _counted: dict[str, tuple[RunningJob, int]] = attrs.field(factory=dict)
    _pixels: dict[str, int] = attrs.field(factory=dict)
    _work: float = 0.0

    def observe(self, running: Mapping[str, RunningJob]) -> None:
        for job_id, job in running.items():
            if job_id not in self._counted:
                self._counted[job_id] = (job, 0)
                self._pixels[job_id] = job.spec.width * job.spec.height if job.spec is not None else 0
        for job_id, (job, frames_before) in list(self._counted.items()):
            frames = job.last_snapshot.frame if job.last_snapshot is not None else 0
            self._work += (frames - frames_before) * self._pixels[job_id]
            if job_id in running:
                self._counted[job_id] = (job, frames)
            else:
                del self._counted[job_id], self._pixels[job_id]

    def take(self) -> float:
        """Megapixels counted since the last call."""
        work, self._work = self._work, 0.0
        return work / 1e6


@attrs.define
class CpuSampler:
    """The share of all cores busy between two calls, from ``/proc/stat``; None elsewhere."""

    path: Path = _PROC_STAT
    _last: tuple[float, float] | None = None

    def busy(self) -> float | None:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return (now[0] - last[0]) / (now[1] - last[1])

    def _read(self) -> tuple[float, float] | None:
        """(busy, total) jiffies of all cores since boot."""
        try:
            fields = self.path.read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        # user nice system idle iowait irq softirq steal; guest time is already in user.
        values = [float(value) for value in fields[:8]]
        idle = values[3] + values[4]
        total = sum(values)
        return total - idle, total


@attrs.define
class AdaptiveConcurrency:
    """The Trio side: measures windows and applies the policy's decisions."""

    policy: AdaptivePolicy
    limiter: trio.CapacityLimiter
    running: Mapping[str, RunningJob]
    metrics: AgentMetrics
    interval: float
    meter: ThroughputMeter = attrs.field(factory=ThroughputMeter)
    cpu: CpuSampler = attrs.field(factory=CpuSampler)

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    @property
    def encoding(self) -> int:
        """Jobs holding a slot; a prefetched job waits for one and must not count."""
        return sum(not job.prefetched for job in self.running.values())

    def set_limit(self, limit: int, reason: str) -> None:
        if limit != self.limit:
            log.info("Adaptive concurrency: %d -> %d max concurrent jobs (%s)", self.limit, limit, reason)
            self.limiter.total_tokens = limit
        else:
            log.debug("adaptive concurrency stays at %d (%s)", limit, reason)
        self.metrics.max_concurrent_jobs.set(limit)

    async def measure(self) -> Window:
        """One window: settle until the slots match the limit, then count for ``interval`` s."""
        with trio.move_on_after(self.interval):
            while self.encoding != self.limit:
                self.meter.observe(self.running)
                await trio.sleep(TICK_S)
        self.meter.observe(self.running)
        self.meter.take()
        self.cpu.busy()
        started, ticks, full_ticks = trio.current_time(), 0, 0
        while ticks * TICK_S < self.interval:
            await trio.sleep(TICK_S)
            self.meter.observe(self.running)
            ticks += 1
            full_ticks += self.encoding >= self.limit
        throughput = self.meter.take() / max(trio.current_time() - started, TICK_S)
        self.metrics.adaptive_throughput.set(throughput)
        return Window(
            limit=self.limit, throughput=throughput,
            full=full_ticks >= FULL_FRACTION * ticks, cpu_busy=self.cpu.busy(),
        )


def adaptive_bounds(min_jobs: int, max_jobs: int) -> tuple[int, int]:
    """``max_jobs`` 0 means :data:`DEFAULT_MAX_JOBS_PER_CORE` per core."""
    high = max_jobs or DEFAULT_MAX_JOBS_PER_CORE * (os.cpu_count() or 1)
    return min_jobs, max(min_jobs, high)


async def serve_adaptive(
    limiter: trio.CapacityLimiter,
    running: Mapping[str, RunningJob],
    metrics: AgentMetrics,
    *,
    min_jobs: int = 1,
    max_jobs: int = 0,
    interval: float = 10.0,
) -> None:
    """Tune ``limiter.total_tokens`` until cancelled.

    Starts from the limiter's current size, clamped into the bounds.

    Args:
        limiter: the poller's slots.
        running: the agent's running jobs (``AgentState.running``), read, never changed.
        metrics: ``ffrtmp_max_concurrent_jobs`` follows the limit;
            ``ffrtmp_adaptive_throughput_megapixels_per_second`` shows each window's throughput.
        min_jobs: the lowest limit.
        max_jobs: the highest limit; 0 for four per core.
        interval: seconds per measuring window; jobs much shorter than that
            still count, but the limit moves at most once per window.
    """
    low, high = adaptive_bounds(min_jobs, max_jobs)
    tuner = AdaptiveConcurrency(
        policy=AdaptivePolicy(low=low, high=high), limiter=limiter, running=running,
        metrics=metrics, interval=interval,
    )
    log.info(
        "Adaptive concurrency between %d and %d jobs, %.0fs windows, starting at %d",
        low, high, interval, tuner.policy.clamp(tuner.limit),
    )
    tuner.set_limit(tuner.policy.clamp(tuner.limit), "start")
    while True:
        decision = tuner.policy.decide(await tuner.measure())
        tuner.set_limit(decision.limit, decision.reason)
