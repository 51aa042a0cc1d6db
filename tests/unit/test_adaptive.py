"""The --adaptive policy's decisions, the throughput meter, and the task that applies them to the limiter."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.config import AgentConfig
from agent.models import Job
from agent.scenarios import JobRejected, build_spec
from agent.worker.adaptive import (
    AdaptiveConcurrency,
    AdaptivePolicy,
    CpuSampler,
    ThroughputMeter,
    Window,
    adaptive_bounds,
)
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.jobs import RunningJob
from agent.worker.lifecycle import Claimed, JobLife, Progressed
from agent.worker.metrics import AgentMetrics
from agent.worker.progress import ProgressSnapshot

# 1280 x 720 pixels per frame.
FRAME_720P_MPX = 0.9216


def full(limit: int, throughput: float, cpu: float | None = 0.5) -> Window:
    return Window(limit=limit, throughput=throughput, full=True, cpu_busy=cpu)


def running_job(job_id: str, scenario: str = "720p30-h264", runner: JobRunner | None = None, **params: str) -> RunningJob:
    """A claimed job holding its slot, whose spec was built the way the agent builds it (by ``runner``, or with no
    settings)."""
    job = Job.from_json({"id": job_id, "scenario": scenario, "status": "processing", "parameters": params})
    life = JobLife(job, "node-1")
    try:
        spec = runner.prepare(job) if runner is not None else build_spec(job)
        life.handle(Claimed(spec=spec))
    except JobRejected as exc:
        life.handle(Claimed(rejection=str(exc)))
    running = RunningJob(life)
    running.mark_started()
    return running


def at_frame(job: RunningJob, frame: int) -> None:
    job.life.handle(Progressed(0.0, ProgressSnapshot(frame=frame), now=float(frame)))


def test_it_probes_upwards_while_the_cpu_has_room() -> None:
    """The first window at a level with spare CPU raises the limit by one."""
    policy = AdaptivePolicy(low=1, high=8)
    assert policy.decide(full(1, 100.0)).limit == 2
    assert policy.decide(full(2, 150.0)).limit == 3


def test_a_level_no_better_than_the_one_below_is_left() -> None:
    """Flat or falling throughput after a step up steps back down."""
    policy = AdaptivePolicy(low=1, high=8)
    policy.decide(full(1, 100.0))
    policy.decide(full(2, 150.0))
    decision = policy.decide(full(3, 152.0))
    assert decision.limit == 2
    assert "no better" in decision.reason


def test_after_a_step_back_it_holds_then_probes_again() -> None:
    """It waits hold_windows windows at the better level before measuring the one above afresh."""
    policy = AdaptivePolicy(low=1, high=8, hold_windows=2)
    policy.decide(full(1, 100.0))
    policy.decide(full(2, 150.0))
    policy.decide(full(3, 140.0))
    assert [policy.decide(full(2, 150.0)).limit for _ in range(3)] == [2, 2, 3]


def test_a_saturated_cpu_stops_the_climb() -> None:
    """With the CPU saturated the limit stays, even though the last step gained."""
    policy = AdaptivePolicy(low=1, high=8)
    policy.decide(full(1, 100.0, cpu=0.8))
    decision = policy.decide(full(2, 120.0, cpu=0.99))
    assert decision.limit == 2
    assert "saturated" in decision.reason


def test_a_saturated_level_that_gains_nothing_steps_down() -> None:
    """Saturation with no gain over the level below lowers the limit."""
    policy = AdaptivePolicy(low=1, high=8)
    policy.decide(full(1, 100.0, cpu=0.9))
    assert policy.decide(full(2, 101.0, cpu=1.0)).limit == 1


def test_it_returns_to_a_level_above_that_measured_better() -> None:
    """If the level it left beats the current one by more than the tolerance, it goes back up."""
    policy = AdaptivePolicy(low=1, high=8)
    policy.decide(full(1, 100.0))
    policy.decide(full(2, 150.0))
    policy.decide(full(3, 140.0))  # back to 2
    assert policy.decide(full(2, 100.0, cpu=1.0)).limit == 3


def test_idle_slots_change_nothing() -> None:
    """A window in which the queue ran dry says nothing about concurrency."""
    policy = AdaptivePolicy(low=1, high=8)
    decision = policy.decide(Window(limit=3, throughput=1.0, full=False))
    assert decision.limit == 3
    assert "idle" in decision.reason


def test_it_stays_within_its_bounds() -> None:
    """It neither goes below low nor above high."""
    assert AdaptivePolicy(low=2, high=2).decide(full(2, 100.0)).limit == 2
    policy = AdaptivePolicy(low=2, high=4)
    policy.decide(full(1, 200.0))
    assert policy.decide(full(2, 100.0)).limit == 3
    assert policy.clamp(9) == 4 and policy.clamp(0) == 2


def test_bounds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        AdaptivePolicy(low=3, high=2)


def test_the_default_upper_bound_is_four_jobs_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert adaptive_bounds(1, 0) == (1, 8)
    assert adaptive_bounds(3, 2) == (3, 3)


def test_the_meter_counts_pixels_including_a_finished_jobs_last_frames() -> None:
    """Frames a job encodes after the last sample before it ends still count."""
    meter = ThroughputMeter()
    job = running_job("a")
    running = {"a": job}
    at_frame(job, 10)
    meter.observe(running)
    at_frame(job, 30)  # the last progress block, then the job leaves the running set
    meter.observe({})
    assert meter.take() == pytest.approx(30 * FRAME_720P_MPX)
    assert meter.take() == 0.0


def test_the_meter_weights_frames_by_their_size() -> None:
    """A 1080p frame is worth 2.25 720p frames; a job that fails validation counts nothing."""
    meter = ThroughputMeter()
    small, large, bad = running_job("s"), running_job("l", "1080p30-h264"), running_job("b", "nonsense")
    for job in (small, large, bad):
        at_frame(job, 4)
    meter.observe({"s": small, "l": large, "b": bad})
    assert meter.take() == pytest.approx(4 * FRAME_720P_MPX * (1 + 2.25))


def test_a_job_with_a_local_input_counts_its_real_pixels(tmp_path: Path) -> None:
    """The spec built at claim time, with this worker's --input-dir, is the one the meter weighs frames by."""
    (tmp_path / "clip.mp4").write_bytes(b"media")
    runner = JobRunner(settings=AgentConfig(work_dir=tmp_path / "work", input_dirs=[tmp_path]), ffmpeg="ffmpeg",
                       inputs=InputCache(tmp_path / "inputs"))
    job = running_job("local", runner=runner, input=str(tmp_path / "clip.mp4"))
    at_frame(job, 5)
    meter = ThroughputMeter()
    meter.observe({"local": job})
    assert job.spec is not None and job.spec.input
    assert meter.take() == pytest.approx(5 * FRAME_720P_MPX)


def test_cpu_busy_share_comes_from_proc_stat_deltas(tmp_path: Path) -> None:
    """Busy is everything but idle and iowait, over the time between two reads."""
    stat = tmp_path / "stat"
    sampler = CpuSampler(path=stat)
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 ...\n")
    assert sampler.busy() is None
    stat.write_text("cpu  250 0 150 750 150 0 0 0 0 0\ncpu0 ...\n")
    assert sampler.busy() == pytest.approx(200 / 300)
    assert CpuSampler(path=tmp_path / "missing").busy() is None


async def test_the_task_raises_the_limiter_logs_and_exports_it(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """One full window with spare CPU: total_tokens 1 -> 2, a log line, the gauges set."""
    limiter = trio.CapacityLimiter(1)
    job = running_job("a")
    running = {"a": job}
    metrics = AgentMetrics.create()
    tuner = AdaptiveConcurrency(
        policy=AdaptivePolicy(low=1, high=4), limiter=limiter, running=running, metrics=metrics, interval=1.0,
    )

    async def encode() -> None:
        for frame in range(0, 1000, 10):
            at_frame(job, frame)
            await trio.sleep(0.05)

    caplog.set_level(logging.INFO, logger="agent.worker.adaptive")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(encode)
        window = await tuner.measure()
        nursery.cancel_scope.cancel()
    assert window.full and window.limit == 1
    assert window.throughput == pytest.approx(200 * FRAME_720P_MPX, rel=0.05)
    tuner.set_limit(tuner.policy.decide(Window(1, window.throughput, True, 0.5)).limit, "test")
    assert limiter.total_tokens == 2
    assert "Adaptive concurrency: 1 -> 2" in caplog.text
    assert metrics.registry.get_sample_value("ffrtmp_max_concurrent_jobs") == 2
    assert metrics.registry.get_sample_value("ffrtmp_adaptive_throughput_megapixels_per_second") == window.throughput


def test_a_prefetched_job_waiting_for_a_slot_does_not_count_as_encoding() -> None:
    """One job encodes and one waits for its slot: the tuner sees one slot in use, not two."""
    encoding = running_job("a")
    waiting = RunningJob(JobLife(Job.from_json({"id": "b", "scenario": "720p30-h264", "status": "processing"}),
                                 "node-1"))
    tuner = AdaptiveConcurrency(
        policy=AdaptivePolicy(low=1, high=4), limiter=trio.CapacityLimiter(1), running={"a": encoding, "b": waiting},
        metrics=AgentMetrics.create(), interval=1.0,
    )
    assert tuner.encoding == 1 == tuner.limit
