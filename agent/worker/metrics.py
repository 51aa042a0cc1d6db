"""The agent's Prometheus metrics.

Each agent owns a registry of its own rather than prometheus-client's global
one, so that the one-process mode (and tests) can run a master and an agent, or
several agents, in one interpreter without duplicate-metric errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.models import FailureReason, JobResult, JobStatus
from agent.worker.progress import ProgressSnapshot
from agent.worker.stall import StallDetector
from agent.worker.usage import ProcessUsage

__all__ = ["AgentMetrics", "EncoderTally"]

# Encodes last from a second (tests, stubs) to hours (long live streams).
JOB_DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# From a claim to the encoder's first progress: under a second with the input at
# hand, minutes when a large input is downloaded or a long test clip generated first.
DISPATCH_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
# A running job whose encoder output stood still this long counts in ffrtmp_stalled_jobs:
# far past FFmpeg's progress period (0.5 s), well before --stall-timeout (300 s) stops it.
STALLED_AFTER_S = 60.0


def _news(total: int, seen: int) -> int:
    """What a running total adds: all of it when lower than before (the next encoder), none when 0 (unknown)."""
    if total <= 0:
        return 0
    return total - seen if total >= seen else total


@attrs.define
class EncoderTally:
    """One job's encoders as its metrics saw them, from its claim (``claimed_at``, monotonic) to its result.

    A progress block carries totals since its encoder started; the tally keeps
    the last ones so that each block adds only what is new, and a frame count
    lower than the last means the next attempt (a fallback) started from zero.
    """

    claimed_at: float
    first_progress_at: float | None = None
    fps: float = 0.0
    # What the job added to ffrtmp_encoder_frames_total and ffrtmp_output_bytes_total so far.
    frames: int = 0
    output_bytes: int = 0
    _seen_frames: int = 0
    _seen_bytes: int = 0
    _stall: StallDetector | None = None

    def progressed(self, snapshot: ProgressSnapshot, now: float) -> tuple[int, int]:
        """Take one progress block; returns the frames and output bytes it adds."""
        frames, written = _news(snapshot.frame, self._seen_frames), _news(snapshot.total_size, self._seen_bytes)
        if self._stall is None or 0 < snapshot.frame < self._seen_frames:
            self._stall = StallDetector(timeout=STALLED_AFTER_S, since=now)
        self._stall.observe(snapshot, now)
        if self.first_progress_at is None:
            self.first_progress_at = now
        self._seen_frames = snapshot.frame or self._seen_frames
        self._seen_bytes = snapshot.total_size or self._seen_bytes
        self.fps = snapshot.fps
        self.frames += frames
        self.output_bytes += written
        return frames, written

    def stalled(self, now: float) -> bool:
        """True when the encoder reported progress once, then none that advanced for :data:`STALLED_AFTER_S`."""
        return self._stall is not None and self._stall.stalled(now)


@attrs.define
class AgentMetrics:
    registry: CollectorRegistry
    active_jobs: Gauge
    max_concurrent_jobs: Gauge
    jobs_finished: Counter
    job_duration: Histogram
    input_bytes: Counter
    output_bytes: Counter
    breaker_state: Gauge
    engine_available: Gauge
    hw_encoder_available: Gauge
    adaptive_throughput: Gauge
    encoder_frames: Counter
    encoder_fps: Gauge
    dispatch_time: Histogram
    stalled_jobs: Gauge
    usage: ProcessUsage

    def follow_jobs(self, tallies: Callable[[], Collection[EncoderTally]]) -> None:
        """Read the running jobs' fps and stalls from ``tallies`` at each scrape: totals, no label per job."""
        self.encoder_fps.set_function(lambda: sum(tally.fps for tally in tallies()))
        self.stalled_jobs.set_function(lambda: sum(tally.stalled(time.monotonic()) for tally in tallies()))

    def encoder_progressed(self, tally: EncoderTally, snapshot: ProgressSnapshot, now: float) -> None:
        """Count one progress block of a job's encoder; its first gives the job's dispatch time."""
        if tally.first_progress_at is None:
            self.dispatch_time.observe(now - tally.claimed_at)
        frames, written = tally.progressed(snapshot, now)
        self.encoder_frames.inc(frames)
        self.output_bytes.inc(written)

    def job_finished(self, tally: EncoderTally, result: JobResult, seconds: float) -> None:
        """Count a job's result; the output and frames its progress did not show count now."""
        self.jobs_finished.labels(result.status.value, result.failure_reason).inc()
        self.job_duration.observe(seconds)
        self.input_bytes.inc(result.metrics.get("input_file_bytes", 0))
        self.output_bytes.inc(max(0, result.metrics.get("output_file_bytes", 0) - tally.output_bytes))
        self.encoder_frames.inc(max(0, result.metrics.get("frames", 0) - tally.frames))

    def report_capabilities(self, engines: dict[str, bool], hw_encoders: dict[str, bool]) -> None:
        """Publish what start-up detection found; absent ones read 0 rather than missing."""
        for engine, present in engines.items():
            self.engine_available.labels(engine).set(int(present))
        for encoder, present in hw_encoders.items():
            self.hw_encoder_available.labels(encoder).set(int(present))

    @classmethod
    def create(cls) -> AgentMetrics:
        registry = CollectorRegistry(auto_describe=True)
        usage = ProcessUsage()
        registry.register(usage)
        metrics = cls(
            registry=registry,
            # Unlabelled, as the original agent exported it: dashboards query it by name.
            active_jobs=Gauge(
                "ffrtmp_active_jobs", "Jobs running on this agent now", registry=registry
            ),
            max_concurrent_jobs=Gauge(
                "ffrtmp_max_concurrent_jobs", "Jobs this agent may run at once", registry=registry
            ),
            jobs_finished=Counter(
                "ffrtmp_jobs_finished",
                "Jobs this agent finished, by result status and failure reason",
                ["status", "reason"],
                registry=registry,
            ),
            job_duration=Histogram(
                "ffrtmp_job_duration_seconds",
                "Wall time of a job from claim to result",
                buckets=JOB_DURATION_BUCKETS,
                registry=registry,
            ),
            input_bytes=Counter(
                "ffrtmp_input_bytes", "Bytes of input the encoders read", registry=registry
            ),
            output_bytes=Counter(
                "ffrtmp_output_bytes", "Bytes of output the encoders wrote", registry=registry
            ),
            breaker_state=Gauge(
                "ffrtmp_circuit_breaker_state",
                "Circuit breaker: 0 closed (claiming), 1 open (paused), 2 half-open (one probe job)",
                registry=registry,
            ),
            engine_available=Gauge(
                "ffrtmp_engine_available",
                "1 if this agent can run jobs with the engine, detected at start",
                ["engine"],
                registry=registry,
            ),
            hw_encoder_available=Gauge(
                "ffrtmp_hw_encoder_available",
                "1 if the hardware encoder passed a one-frame test encode at start",
                ["encoder"],
                registry=registry,
            ),
            adaptive_throughput=Gauge(
                "ffrtmp_adaptive_throughput_megapixels_per_second",
                "Pixels the encoders produced per second in the last --adaptive window",
                registry=registry,
            ),
            encoder_frames=Counter(
                "ffrtmp_encoder_frames", "Frames the encoders wrote, as their progress reports them",
                registry=registry,
            ),
            encoder_fps=Gauge(
                "ffrtmp_encoder_fps", "Frames per second of the running encoders together, from their last progress",
                registry=registry,
            ),
            dispatch_time=Histogram(
                "ffrtmp_job_dispatch_seconds",
                "From a claim to its encoder's first progress: input download or generation and encoder start",
                buckets=DISPATCH_BUCKETS,
                registry=registry,
            ),
            stalled_jobs=Gauge(
                "ffrtmp_stalled_jobs",
                f"Running jobs whose encoder output has not advanced for {STALLED_AFTER_S:g}s",
                registry=registry,
            ),
            usage=usage,
        )
        # Every result an agent gives reads 0 until it happens, so that rates and alerts on it have a series.
        for status in (JobStatus.COMPLETED, JobStatus.CANCELED):
            metrics.jobs_finished.labels(status.value, "")
        for reason in FailureReason:
            metrics.jobs_finished.labels(JobStatus.FAILED.value, reason.value)
        return metrics
