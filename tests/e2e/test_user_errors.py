"""Jobs that fail by their own fault, on a real master and agent: final, not retried, never counted.

A submitter must not be able to pause a farm with bad jobs: six jobs whose
input file is missing fail as user_error with no retry, the agent's circuit
breaker (threshold 2 here, stricter than the default 5) stays closed, and the
next good job starts at once — an open breaker would hold it for the 60 s
cool-down, past the test's timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from agent.client import MasterClient
from agent.models import JobRequest, JobStatus
from tests.support import Processes, scrape_gauge, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.slow


def job_reading(path: Path | None, duration: float = 1) -> JobRequest:
    parameters: dict[str, object] = {"duration": duration, "preset": "ultrafast"}
    if path is not None:
        parameters["input"] = str(path)
    return JobRequest.from_json({"scenario": "144p30-h264", "parameters": parameters})


async def test_missing_inputs_are_user_errors_that_leave_the_breaker_closed(procs: Processes, tmp_path: Path) -> None:
    """Six missing input files: user_error, retry_count 0, /ready 200, breaker gauge 0; the next job completes."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        missing = [(await client.submit_job(job_reading(inputs / f"missing-{n}.mp4"))).id for n in range(6)]
        agent, status_url = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--input-dir", str(inputs),
            "--poll-interval", "0.1s", "--breaker-threshold", "2", "--breaker-cooldown", "60s",
        )
        failed = await wait_for_jobs(client, missing, timeout=30)
        good = (await client.submit_job(job_reading(None))).id
        [done] = await wait_for_jobs(client, [good], timeout=30)
    for job in failed:
        assert (job.status, job.failure_reason, job.retry_count) == (JobStatus.FAILED, "user_error", 0), job
        assert "missing-" in job.error and "does not exist on this worker" in job.error
    assert done.status is JobStatus.COMPLETED, done.error
    async with httpx.AsyncClient(base_url=status_url) as http:
        assert (await http.get("/ready")).status_code == 200
        assert await scrape_gauge(http, "ffrtmp_circuit_breaker_state") == 0
    assert "Circuit breaker open" not in agent.log


async def test_an_input_that_is_not_media_is_a_user_error(procs: Processes, tmp_path: Path) -> None:
    """Random bytes named .mp4: FFmpeg finds no media, the job fails once as user_error naming why."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "random.mp4").write_bytes(os.urandom(100_000))
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        job_id = (await client.submit_job(job_reading(inputs / "random.mp4"))).id
        await start_agent(procs, "agent", master_url, tmp_path / "work", "--input-dir", str(inputs),
                          "--poll-interval", "0.1s")
        [job] = await wait_for_jobs(client, [job_id], timeout=30)
    assert (job.status, job.failure_reason, job.retry_count) == (JobStatus.FAILED, "user_error", 0), job
    assert "Invalid data found when processing input" in job.error
