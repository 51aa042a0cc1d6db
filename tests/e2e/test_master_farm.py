"""The master as a job server under load and faults: real master and agent processes.

Network rules: everything on 127.0.0.1 with ports from the OS (PostgreSQL on
a Unix socket), each process stopped by the fixture that started it. Tests
about dispatch use an encoder stub (``tests.encoder_stubs``): they count
claims and results, and real encodes would only make them slow.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.models import Job, JobRequest, JobStatus
from agent.worker.identity import NodeTokens
from tests import encoder_stubs
from tests.postgres import fresh_database, postgres_dsn  # noqa: F401  (the fixture)
from tests.support import ActAsNode, Processes, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.slow

TINY = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 0.2}})


async def submit_many(client: MasterClient, request: JobRequest, count: int, *, parallel: int = 8) -> list[str]:
    ids: list[str] = []

    async def submitter(share: int) -> None:
        for _ in range(share):
            ids.append((await client.submit_job(request)).id)

    async with trio.open_nursery() as nursery:
        for index in range(parallel):
            nursery.start_soon(submitter, count // parallel + (index < count % parallel))
    return ids


def encoded_job_ids(stub: encoder_stubs.EncoderStub) -> Counter[str]:
    """How often each job was encoded: outputs live in ``outputs/<job id>/``."""
    return Counter(Path(output).parent.name for _, output in stub.entries)


async def test_eight_pollers_run_500_jobs_each_exactly_once(procs: Processes, tmp_path: Path) -> None:
    """8 nodes claim and complete concurrently against one SQLite master: 500 claims, 500 completed."""
    _, url = await start_master(procs, tmp_path)
    claims: list[tuple[str, str]] = []
    async with MasterClient(url) as client, httpx.AsyncClient(base_url=url, timeout=30, auth=ActAsNode()) as http:
        ids = await submit_many(client, TINY, 500)
        nodes = [(await http.post("/nodes/register", json={"address": f"poller-{i}:1"})).json()["id"] for i in range(8)]

        async def poller(node_id: str) -> None:
            while (job := (await http.get("/jobs/next", params={"node_id": node_id})).json()["job"]) is not None:
                claims.append((job["id"], node_id))
                result = {"job_id": job["id"], "node_id": node_id, "status": "completed"}
                assert (await http.post("/results", json=result)).json() == {"status": "success"}

        async with trio.open_nursery() as nursery:
            for node_id in nodes:
                nursery.start_soon(poller, node_id)
        jobs = await client.list_jobs()
    assert sorted(job_id for job_id, _ in claims) == sorted(ids), "every job claimed exactly once"
    holders = dict(claims)
    assert all(j.status is JobStatus.COMPLETED and j.node_id == holders[j.id] for j in jobs)
    assert len({node_id for _, node_id in claims}) == 8, "every poller got work"


async def test_two_masters_on_postgres_serve_four_agents_200_jobs_exactly_once(
    procs: Processes, tmp_path: Path, postgres_dsn: str  # noqa: F811
) -> None:
    """Two master processes share one PostgreSQL; two agents poll each; every job is encoded once.

    The encoder is a stub: the test is about dispatch (claims, leases, results), not encoding.
    """
    dsn = fresh_database(postgres_dsn)
    masters = [await start_master(procs, tmp_path / name, "--db-dsn", dsn) for name in ("m1", "m2")]
    stub = encoder_stubs.succeeding(tmp_path / "stub")
    for index in range(4):
        _, url = masters[index % 2]
        await start_agent(
            procs, f"agent-{index}", url, tmp_path / f"agent-{index}", "--ffmpeg", str(stub.path),
            "--max-concurrent-jobs", "2", "--poll-interval", "0.1s",
        )
    async with MasterClient(masters[0][1]) as first, MasterClient(masters[1][1]) as second:
        ids = await submit_many(first, TINY, 100) + await submit_many(second, TINY, 100)
        jobs = await wait_for_jobs(second, ids, timeout=120)
        nodes = await first.list_nodes()
    assert all(j.status is JobStatus.COMPLETED and j.retry_count == 0 for j in jobs), Counter(j.status for j in jobs)
    assert encoded_job_ids(stub) == Counter({job_id: 1 for job_id in ids}), "each job encoded once"
    assert len(nodes) == 4 and {j.node_id for j in jobs} == {n.id for n in nodes}, "all four agents worked"
    for master, _ in masters:
        assert any("leased to node" in line for line in master.lines), f"{master.name} leased no job"


async def test_a_job_of_a_killed_agent_is_finished_by_another_and_the_late_result_refused(
    procs: Processes, tmp_path: Path
) -> None:
    """SIGKILL mid-job: 3 missed beats later the job is requeued, another agent completes it,
    and the dead node's result, replayed with its token, gets 409 and changes nothing."""
    master, url = await start_master(procs, tmp_path, "--heartbeat-interval", "0.5s")
    beats = ("--heartbeat-interval", "0.2s", "--poll-interval", "0.1s")
    doomed, _ = await start_agent(procs, "doomed", url, tmp_path / "doomed", *beats)
    async with MasterClient(url) as client:
        job = await client.submit_job(
            JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 4, "realtime": True}})
        )
        with trio.fail_after(20):
            while (running := await client.get_job(job.id)).progress <= 0:  # the encode has begun
                await trio.sleep(0.05)
        doomed.process.send_signal(signal.SIGKILL)
        await doomed.wait()
        await master.wait_for(rf"Node {running.node_name} \(.*\) silent for 3 heartbeats")
        await start_agent(procs, "survivor", url, tmp_path / "survivor", *beats)
        [done] = await wait_for_jobs(client, [job.id], timeout=30)
        late = {"job_id": job.id, "node_id": running.node_id, "status": "completed"}
        token = NodeTokens.in_work_dir(tmp_path / "doomed").for_address(running.node_name)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            replayed = await http.post("/results", json=late)
        after = await client.get_job(job.id)
        attempts = await client.job_attempts(job.id)
    assert (done.status, done.retry_count) == (JobStatus.COMPLETED, 1), "an interrupted attempt costs a retry"
    assert done.node_id != running.node_id
    assert replayed.status_code == 409 and "not leased" in replayed.json()["error"]
    assert after == done
    assert [(a.node_id, a.outcome) for a in attempts] == [(running.node_id, "lost"), (done.node_id, "completed")]
    assert attempts[0].error == f"node {running.node_name} went silent while holding the job"


async def test_a_failing_job_is_retried_max_retries_times_then_failed_with_the_last_error(
    procs: Processes, tmp_path: Path
) -> None:
    """--max-retries 2: three encodes, retry_count 2, the error of the third attempt kept."""
    _, url = await start_master(procs, tmp_path, "--max-retries", "2")
    stub = encoder_stubs.failing(tmp_path / "stub")
    await start_agent(procs, "agent", url, tmp_path / "work", "--ffmpeg", str(stub.path), "--poll-interval", "0.1s")
    async with MasterClient(url) as client:
        job = await client.submit_job(TINY)
        [failed] = await wait_for_jobs(client, [job.id], timeout=30)
    assert (failed.status, failed.retry_count, failed.failure_reason) == (JobStatus.FAILED, 2, "runtime_error")
    assert "boom: attempt 3 failed" in failed.error
    assert encoded_job_ids(stub) == Counter({job.id: 3})


async def test_a_canceled_job_is_stopped_and_never_run_again(procs: Processes, tmp_path: Path) -> None:
    """Cancel while the encoder runs: the agent stops it, the job stays canceled, no second claim."""
    _, url = await start_master(procs, tmp_path, "--heartbeat-interval", "0.5s")
    stub = encoder_stubs.hanging(tmp_path / "stub")
    agent, _ = await start_agent(
        procs, "agent", url, tmp_path / "work", "--ffmpeg", str(stub.path),
        "--poll-interval", "0.1s", "--heartbeat-interval", "0.2s",
        "--kill-timeout", "1s", "--shutdown-grace", "0s",  # the second job hangs until the agent stops
    )
    async with MasterClient(url) as client:
        job = await client.submit_job(TINY)
        with trio.fail_after(20):
            while not stub.entries:
                await trio.sleep(0.05)
        await client.cancel_job(job.id)
        await agent.wait_for(rf"Job {job.id} canceled")
        later = await client.submit_job(TINY)  # proof the agent went on claiming
        with trio.fail_after(20):
            while len(stub.entries) < 2:
                await trio.sleep(0.05)
        final = await client.get_job(job.id)
        await agent.stop()  # while the master still takes its report of the second job
    assert (final.status, final.retry_count) == (JobStatus.CANCELED, 0)
    assert encoded_job_ids(stub) == Counter({job.id: 1, later.id: 1})
    assert len([line for line in agent.lines if f"Received job: {job.id}" in line]) == 1


async def test_a_gpu_only_job_at_the_head_does_not_stop_a_cpu_agent(procs: Processes, tmp_path: Path) -> None:
    """An nvenc job queued first waits for a GPU node; the CPU agent completes the job behind it."""
    _, url = await start_master(procs, tmp_path)
    stub = encoder_stubs.succeeding(tmp_path / "stub")
    async with MasterClient(url) as client:
        gpu_job = await client.submit_job(JobRequest.from_json({"scenario": "720p30-h264", "parameters": {"codec": "h264_nvenc"}}))
        cpu_job = await client.submit_job(TINY)
        await start_agent(procs, "cpu", url, tmp_path / "work", "--ffmpeg", str(stub.path), "--poll-interval", "0.1s")
        [done] = await wait_for_jobs(client, [cpu_job.id], timeout=30)
        waiting: Job = await client.get_job(gpu_job.id)
    assert done.status is JobStatus.COMPLETED
    assert (waiting.status, waiting.node_id) == (JobStatus.PENDING, "")
