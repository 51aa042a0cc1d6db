"""The agent's process and encoder metrics against real processes: children that burn CPU, a real agent encoding.

Network rules: the master and the agent bind 127.0.0.1, port 0; each process is stopped by the fixture that started it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.models import JobRequest, JobStatus
from agent.worker.usage import ProcessUsage
from tests.support import Processes, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.timeout(60)

# A child that spends a quarter of a second of CPU and holds 64 MB, then waits to be killed.
BUSY_CHILD = """\
import sys, time
held = bytearray(64 * 1024 * 1024)
started = time.process_time()
while time.process_time() - started < 0.25:
    pass
print("busy done", flush=True)
time.sleep(60)
"""
MB = 1024 * 1024


async def start_busy_child() -> trio.Process:
    child = await trio.lowlevel.open_process([sys.executable, "-c", BUSY_CHILD], stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert b"busy done" in await child.stdout.receive_some()
    return child


async def test_a_child_counts_as_an_encoder_and_its_cpu_stays_counted_once_it_exits() -> None:
    """CPU and memory of a running child are the encoders'; after it is killed and reaped its CPU time remains."""
    usage = ProcessUsage()
    before = usage.sample()
    child = await start_busy_child()
    try:
        running = usage.sample()
        assert running.encoder_processes == before.encoder_processes + 1
        assert running.encoder_rss >= before.encoder_rss + 64 * MB
        assert running.encoder_cpu_s >= before.encoder_cpu_s + 0.2
    finally:
        child.kill()
        await child.wait()
    after = usage.sample()
    assert after.encoder_processes == before.encoder_processes
    assert after.encoder_rss < running.encoder_rss
    assert after.encoder_cpu_s >= running.encoder_cpu_s


async def test_a_helper_process_counts_as_the_agent_not_as_an_encoder() -> None:
    """The guardian is part of the agent: its memory joins the agent's, and no encoder is counted for it."""
    usage = ProcessUsage()
    before = usage.sample()
    child = await start_busy_child()
    try:
        usage.helper_pids.add(child.pid)
        sample = usage.sample()
        assert sample.encoder_processes == before.encoder_processes
        assert sample.agent_rss >= before.agent_rss + 64 * MB
    finally:
        child.kill()
        await child.wait()


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not on /metrics:\n{text}"
    return float(match.group(1))


@pytest.mark.slow
async def test_an_agent_running_ffmpeg_exports_its_frames_bytes_dispatch_time_and_cpu(
    procs: Processes, tmp_path: Path
) -> None:
    """After one real encode the counters agree with the job's result, and the encoder's CPU time is counted."""
    _, master_url = await start_master(procs, tmp_path)
    _, status_url = await start_agent(procs, "agent", master_url, tmp_path / "work")
    async with MasterClient(master_url) as client:
        request = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 2}})
        job_id = (await client.submit_job(request)).id
        [job] = await wait_for_jobs(client, [job_id], timeout=40)
    assert job.status is JobStatus.COMPLETED, job.error
    async with httpx.AsyncClient(base_url=status_url) as http:
        text = (await http.get("/metrics")).text
    assert sample(text, "ffrtmp_encoder_frames_total") == job.metrics["frames"] == 60
    assert sample(text, "ffrtmp_output_bytes_total") == job.metrics["output_file_bytes"] > 0
    assert sample(text, "ffrtmp_job_dispatch_seconds_count") == 1
    assert sample(text, "ffrtmp_encoder_cpu_seconds_total") > 0
    assert sample(text, "ffrtmp_agent_cpu_seconds_total") > 0
    assert sample(text, "ffrtmp_agent_resident_memory_bytes") > 0
    assert sample(text, "ffrtmp_encoder_fps") == 0  # nothing runs now
    assert sample(text, "ffrtmp_stalled_jobs") == 0
