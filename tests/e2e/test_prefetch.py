"""--prefetch as agent processes show it: a job claimed ahead, visible as such, handed back on drain.

Network rules: everything on 127.0.0.1 with ports from the OS, each process
stopped by the fixture that started it. The encoder is a stub that sleeps
without reporting progress (``tests.encoder_stubs.sleeping``); the jobs ask
for one second of media, so before any progress the agent counts a running
one as ending soon and claims the next job ahead.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.models import Job, JobProgress, JobRequest, JobStatus
from tests import encoder_stubs
from tests.support import Processes, run_command, scrape_gauge, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.slow

SHORT = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 1}})
ENCODE_S = 4.0


def prefetched(job: Job) -> bool:
    return job.status is JobStatus.PROCESSING and job.live is not None and job.live.stage == JobProgress.PREFETCHED


async def _until(client: MasterClient, job_id: str, shown: Callable[[Job], bool]) -> Job:
    """The job once the master shows it so."""
    with trio.fail_after(20):
        while not shown(job := await client.get_job(job_id)):
            await trio.sleep(0.1)
    return job


async def test_a_job_claimed_ahead_shows_as_prefetched_until_a_slot_frees(procs: Processes, tmp_path: Path) -> None:
    """One slot, two jobs: the second is leased, ``prefetched`` on the master, the CLI and the agent (not counted
    as active), then runs."""
    _, url = await start_master(procs, tmp_path)
    stub = encoder_stubs.sleeping(tmp_path / "stub", ENCODE_S)
    async with MasterClient(url) as client:
        first, second = [(await client.submit_job(SHORT)).id for _ in range(2)]
        agent, status_url = await start_agent(
            procs, "agent", url, tmp_path / "work", "--ffmpeg", str(stub.path), "--prefetch", "1",
        )
        waiting = await _until(client, second, prefetched)
        async with httpx.AsyncClient(base_url=status_url) as http:
            shown = {job["id"]: job["stage"] for job in (await http.get("/jobs")).json()["jobs"]}
            active = await scrape_gauge(http, "ffrtmp_active_jobs")
        listed = await run_command("jobs", "list", "--master", url)
        assert waiting.status is JobStatus.PROCESSING and waiting.node_id == (await client.get_job(first)).node_id
        assert shown == {first: JobProgress.ENCODING, second: JobProgress.PREFETCHED}
        assert active == 1, "a prefetched job holds no slot, so the gauge stays within the limit"
        assert len(stub.entries) == 1, "the prefetched job's encoder has not started"
        [row] = [line for line in listed.out.splitlines() if second in line]
        assert JobProgress.PREFETCHED in row.split(), listed
        jobs = await wait_for_jobs(client, [first, second], timeout=30)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2


async def test_sigterm_hands_a_prefetched_job_back_unstarted_and_another_agent_runs_it(
    procs: Processes, tmp_path: Path
) -> None:
    """The drain gives the waiting job back at once, free of a retry; the running one finishes in the grace."""
    _, url = await start_master(procs, tmp_path)
    stub = encoder_stubs.sleeping(tmp_path / "stub", ENCODE_S)
    async with MasterClient(url) as client:
        first, second = [(await client.submit_job(SHORT)).id for _ in range(2)]
        draining, _ = await start_agent(
            procs, "draining", url, tmp_path / "a", "--ffmpeg", str(stub.path), "--prefetch", "1",
            "--shutdown-grace", "60s",
        )
        await _until(client, second, prefetched)
        draining.signal(signal.SIGTERM)
        handed_back = await _until(client, second, lambda job: job.status is JobStatus.PENDING)
        assert (handed_back.handbacks, handed_back.retry_count) == (1, 0)
        assert (await client.get_job(first)).status is JobStatus.PROCESSING
        await start_agent(procs, "other", url, tmp_path / "b", "--ffmpeg", str(stub.path), "--prefetch", "0")
        jobs = await wait_for_jobs(client, [first, second], timeout=30)
        assert await draining.wait(timeout=30) == 0, draining.log
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2
    assert jobs[0].node_id != jobs[1].node_id
    assert len(stub.entries) == 2, "each job encoded once"


async def test_without_prefetch_a_busy_agent_leaves_the_next_job_in_the_queue(procs: Processes, tmp_path: Path) -> None:
    """--prefetch 0: a slot before every claim, as before prefetching existed."""
    _, url = await start_master(procs, tmp_path)
    stub = encoder_stubs.sleeping(tmp_path / "stub", 2.0)
    async with MasterClient(url) as client:
        first, second = [(await client.submit_job(SHORT)).id for _ in range(2)]
        await start_agent(procs, "agent", url, tmp_path / "work", "--ffmpeg", str(stub.path), "--prefetch", "0")
        await _until(client, first, lambda job: job.status is JobStatus.PROCESSING)
        await trio.sleep(1.0)
        assert (await client.get_job(second)).status is JobStatus.PENDING
        jobs = await wait_for_jobs(client, [first, second], timeout=30)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 2
