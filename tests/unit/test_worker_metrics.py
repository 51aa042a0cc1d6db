"""The agent's metrics as plain code: progress blocks in, counters and gauges out, times passed in."""

from __future__ import annotations

import time

from agent.models import FailureReason, Job, JobResult, JobStatus
from agent.worker.metrics import STALLED_AFTER_S, AgentMetrics, EncoderTally
from agent.worker.progress import ProgressSnapshot


def value(metrics: AgentMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"{name}{labels} is not exported"
    return found


def block(frame: int, total_size: int = 0, out_time_s: float = 0.0, fps: float = 0.0) -> ProgressSnapshot:
    return ProgressSnapshot(frame=frame, total_size=total_size, out_time_s=out_time_s, fps=fps)


def test_each_progress_block_adds_only_the_frames_and_bytes_that_are_new() -> None:
    """Blocks carry totals since the encoder started; the counters grow by the difference."""
    metrics, tally = AgentMetrics.create(), EncoderTally(claimed_at=0.0)
    for frame, size in ((10, 1000), (25, 3000), (40, 3000)):
        metrics.encoder_progressed(tally, block(frame, size), now=1.0)
    assert value(metrics, "ffrtmp_encoder_frames_total") == 40
    assert value(metrics, "ffrtmp_output_bytes_total") == 3000


def test_a_lower_frame_count_is_the_next_attempt_and_counts_from_zero() -> None:
    """A fallback encoder starts again at frame 1: its frames are new frames, not a decrease."""
    metrics, tally = AgentMetrics.create(), EncoderTally(claimed_at=0.0)
    metrics.encoder_progressed(tally, block(50), now=1.0)
    metrics.encoder_progressed(tally, block(5), now=2.0)
    metrics.encoder_progressed(tally, block(20), now=3.0)
    assert value(metrics, "ffrtmp_encoder_frames_total") == 70


def test_unknown_totals_add_nothing_and_are_not_taken_for_a_restart() -> None:
    """FFmpeg's N/A reads 0: such a block neither counts nor resets what was seen."""
    metrics, tally = AgentMetrics.create(), EncoderTally(claimed_at=0.0)
    for frame, size in ((10, 500), (0, 0), (12, 600)):
        metrics.encoder_progressed(tally, block(frame, size), now=1.0)
    assert value(metrics, "ffrtmp_encoder_frames_total") == 12
    assert value(metrics, "ffrtmp_output_bytes_total") == 600


def test_the_first_progress_block_gives_the_dispatch_time_once() -> None:
    """Claim at 10 s, first progress at 12.5 s: one observation of 2.5 s, however many blocks follow."""
    metrics, tally = AgentMetrics.create(), EncoderTally(claimed_at=10.0)
    metrics.encoder_progressed(tally, block(1), now=12.5)
    metrics.encoder_progressed(tally, block(2), now=13.0)
    assert value(metrics, "ffrtmp_job_dispatch_seconds_count") == 1
    assert value(metrics, "ffrtmp_job_dispatch_seconds_sum") == 2.5


def test_a_result_adds_what_progress_did_not_show() -> None:
    """The output file's final size and the result's frame count top the counters up, never down."""
    metrics, tally = AgentMetrics.create(), EncoderTally(claimed_at=0.0)
    metrics.encoder_progressed(tally, block(20, 4000), now=1.0)
    result = JobResult(job_id="j1", node_id="n1", status=JobStatus.COMPLETED,
                       metrics={"frames": 30, "output_file_bytes": 5000, "input_file_bytes": 800})
    metrics.job_finished(tally, result, seconds=2.0)
    assert value(metrics, "ffrtmp_encoder_frames_total") == 30
    assert value(metrics, "ffrtmp_output_bytes_total") == 5000
    assert value(metrics, "ffrtmp_input_bytes_total") == 800
    assert value(metrics, "ffrtmp_jobs_finished_total", status="completed", reason="") == 1
    smaller = JobResult(job_id="j2", node_id="n1", status=JobStatus.COMPLETED, metrics={"output_file_bytes": 10})
    metrics.job_finished(EncoderTally(claimed_at=0.0, output_bytes=4000), smaller, seconds=1.0)
    assert value(metrics, "ffrtmp_output_bytes_total") == 5000


def test_fps_and_stalled_jobs_are_read_from_the_running_jobs_at_each_scrape() -> None:
    """Two encoders at 25 and 30 fps read 55; a job gone from the list leaves no series behind."""
    metrics = AgentMetrics.create()
    running = [EncoderTally(claimed_at=0.0), EncoderTally(claimed_at=0.0)]
    metrics.follow_jobs(lambda: running)
    for tally, fps in zip(running, (25.0, 30.0)):
        metrics.encoder_progressed(tally, block(1, fps=fps), now=time.monotonic())
    assert value(metrics, "ffrtmp_encoder_fps") == 55
    running.pop()
    assert value(metrics, "ffrtmp_encoder_fps") == 25
    assert value(metrics, "ffrtmp_stalled_jobs") == 0


def test_a_job_is_stalled_once_its_progress_stood_still_for_the_threshold() -> None:
    """Not before its first progress (an input may still be downloading), nor while frames advance."""
    tally = EncoderTally(claimed_at=0.0)
    assert not tally.stalled(now=STALLED_AFTER_S * 10)
    tally.progressed(block(10, out_time_s=1.0), now=100.0)
    tally.progressed(block(20, out_time_s=2.0), now=100.0 + STALLED_AFTER_S - 1)
    assert not tally.stalled(now=100.0 + STALLED_AFTER_S + 1)
    tally.progressed(block(20, out_time_s=2.0), now=100.0 + 2 * STALLED_AFTER_S - 1)
    assert tally.stalled(now=100.0 + 2 * STALLED_AFTER_S)


def test_every_result_and_failure_reason_reads_zero_before_it_happens() -> None:
    """Alert rules on a reason (stalled, runtime_error) need its series before the first such job."""
    metrics = AgentMetrics.create()
    for reason in FailureReason:
        assert value(metrics, "ffrtmp_jobs_finished_total", status="failed", reason=reason.value) == 0
    assert value(metrics, "ffrtmp_jobs_finished_total", status="canceled", reason="") == 0
    assert value(metrics, "ffrtmp_circuit_breaker_state") == 0
    assert value(metrics, "ffrtmp_stalled_jobs") == 0


def test_a_failed_result_is_counted_under_its_reason() -> None:
    """One stalled job: the stalled series reads 1, the others stay 0."""
    metrics = AgentMetrics.create()
    job = Job(id="j1", scenario="144p30-h264")
    result = JobResult.failure(job, "n1", FailureReason.STALLED, "no progress")
    metrics.job_finished(EncoderTally(claimed_at=0.0), result, seconds=1.0)
    assert value(metrics, "ffrtmp_jobs_finished_total", status="failed", reason="stalled") == 1
    assert value(metrics, "ffrtmp_jobs_finished_total", status="failed", reason="runtime_error") == 0
