"""Stall detection in the job runner, with real processes (agent/worker/stall.py, agent/worker/encoder.py).

A stub encoder that reports once and then hangs stands in for a stalled
one; the real FFmpeg reading at the native rate shows that a long real-time
job is not mistaken for a stall.
"""

from __future__ import annotations

from pathlib import Path

import trio

from agent.config import AgentConfig
from agent.models import FailureReason, Job, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from tests.encoder_stubs import stalling
from tests.support import processes_mentioning, run_job

STEP_TIMEOUT_S = 60


def runner_for(ffmpeg: str, tmp_path: Path, stall_timeout: float) -> JobRunner:
    return JobRunner(
        settings=AgentConfig(work_dir=tmp_path / "work", stall_timeout=stall_timeout, kill_timeout=3),
        ffmpeg=ffmpeg, inputs=InputCache(tmp_path / "inputs"),
    )


async def test_an_encoder_whose_output_stops_advancing_is_stopped_and_the_job_fails_as_stalled(
    tmp_path: Path,
) -> None:
    """One progress block, then silence: stopped after the stall timeout, failure_reason stalled, no process left."""
    stub = stalling(tmp_path / "stub")
    runner = runner_for(str(stub.path), tmp_path, stall_timeout=1.5)
    job = Job(id="stall-1", scenario="144p30-h264", parameters={"duration": 30})
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner, job)
    assert result.status is JobStatus.FAILED
    assert result.failure_reason == FailureReason.STALLED.value
    assert "made no progress for 1.5s" in result.error and "--stall-timeout" in result.error
    assert len(stub.entries) == 1, "the encoder ran once"
    assert processes_mentioning(str(stub.path)) == []


async def test_a_real_time_encode_longer_than_the_stall_timeout_is_not_a_stall(tmp_path: Path) -> None:
    """Read at the native rate, the output time advances every progress period: the job completes."""
    runner = runner_for(find_ffmpeg(), tmp_path, stall_timeout=2.0)
    job = Job(id="live-1", scenario="144p30-h264", parameters={"duration": 5, "realtime": True})
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner, job)
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.metrics["duration"] > 3, "it ran at the native rate, well past the stall timeout"
