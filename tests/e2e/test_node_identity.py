"""A node speaks only for itself, and a restarted node gets its jobs back at once.

Real processes: a master and agents running the real FFmpeg on 127.0.0.1.
The third client of the impersonation test is a plain httpx client holding the
shared API key, as any operator script would.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.models import Job, JobRequest, JobStatus
from tests.support import Processes, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.slow

KEY = "farm-key"
BEAT_S = 2.0


def live_job(seconds: float) -> JobRequest:
    """A job that takes its duration in wall time (read at the native rate), using little CPU."""
    return JobRequest.from_json(
        {"scenario": "144p30-h264", "parameters": {"duration": seconds, "realtime": True, "preset": "ultrafast"}}
    )


async def until_running(client: MasterClient, job_id: str, *, node_id: str = "") -> Job:
    """The job once it is processing (on ``node_id`` if given) and has reported progress."""
    with trio.fail_after(30):
        while True:
            job = await client.get_job(job_id)
            if job.status is JobStatus.PROCESSING and job.progress > 0 and node_id in ("", job.node_id):
                return job
            await trio.sleep(0.05)


async def test_an_agent_killed_and_restarted_under_its_name_gets_its_job_back_at_once(
    procs: Processes, tmp_path: Path
) -> None:
    """kill -9, restart with the same --node-name and work dir: the job is running again within two
    heartbeat intervals of the new run's registration (not after the node is declared silent), and completes;
    its history shows the killed run's attempt as lost."""
    master, url = await start_master(procs, tmp_path, "--heartbeat-interval", "30s")
    work = tmp_path / "box1"
    first, _ = await start_agent(procs, "box1", url, work, "--node-name", "box1")
    async with MasterClient(url) as client:
        job = await client.submit_job(live_job(8))
        before = await until_running(client, job.id)
        first.signal(signal.SIGKILL)
        await first.wait()
        second, _ = await start_agent(procs, "box1-again", url, work, "--node-name", "box1")
        await second.wait_for("Registered with")
        registered = trio.current_time()
        again = await until_running(client, job.id, node_id=before.node_id)
        back_after = trio.current_time() - registered
        [done] = await wait_for_jobs(client, [job.id], timeout=60)
        nodes = await client.list_nodes()
        attempts = await client.job_attempts(job.id)
    print(f"job running again {back_after:.2f}s after the restarted agent registered")
    assert back_after < 2 * BEAT_S, f"running again {back_after:.1f}s after registering\n{second.log}"
    assert (done.status, done.retry_count, done.node_id) == (JobStatus.COMPLETED, 1, before.node_id)
    assert "restarted while holding the job" in again.error
    assert [(a.number, a.node_name, a.outcome) for a in attempts] == [(1, "box1", "lost"), (2, "box1", "completed")]
    assert attempts[0].error == "node box1 restarted while holding the job"
    assert [(n.address, n.incarnation) for n in nodes] == [("box1", 2)]
    assert any("is pending again" in line for line in master.lines), master.log


async def test_a_second_live_agent_with_the_same_name_is_refused_naming_the_flag(
    procs: Processes, tmp_path: Path
) -> None:
    """The second exits 2 with one line naming --node-name; the first keeps its node and its work."""
    _, url = await start_master(procs, tmp_path)
    first, _ = await start_agent(procs, "first", url, tmp_path / "a", "--node-name", "box1")
    await first.wait_for("Registered with")
    second, _ = await start_agent(procs, "second", url, tmp_path / "b", "--node-name", "box1")
    assert await second.wait() == 2
    refusals = [line for line in second.lines if "--node-name" in line]
    assert len(refusals) == 1 and "Traceback" not in second.log, second.log
    async with MasterClient(url) as client:
        job = await client.submit_job(live_job(0.5))
        [done] = await wait_for_jobs(client, [job.id], timeout=30)
        nodes = await client.list_nodes()
    assert done.status is JobStatus.COMPLETED
    assert [(n.address, n.incarnation) for n in nodes] == [("box1", 1)]


async def test_a_key_holder_cannot_speak_for_another_node_and_the_real_result_is_kept(
    procs: Processes, tmp_path: Path
) -> None:
    """Progress, heartbeat and a forged result for another node's job: 403; its name: 409; nothing changes."""
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    agent, _ = await start_agent(procs, "worker", url, tmp_path / "work", "--node-name", "worker", "--api-key", KEY)
    async with MasterClient(url, KEY) as client, httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}
    ) as intruder:
        job = await client.submit_job(live_job(3))
        running = await until_running(client, job.id)
        node_id = running.node_id
        forged = {"job_id": job.id, "node_id": node_id, "status": "completed",
                  "metrics": {"bandwidth_mbps": 99999}}
        answers = {
            "progress": await intruder.post(f"/jobs/{job.id}/progress", json={"node_id": node_id, "progress": 99}),
            "heartbeat": await intruder.post(f"/nodes/{node_id}/heartbeat", json={"active_job_ids": []}),
            "result": await intruder.post("/results", json=forged),
            "register": await intruder.post("/nodes/register", json={"address": "worker"}),
        }
        own = (await intruder.post("/nodes/register", json={"address": "intruder"})).json()["node_token"]
        as_itself = await intruder.post("/results", json=forged, headers={"Authorization": f"Bearer {own}"})
        meanwhile = await client.get_job(job.id)
        [done] = await wait_for_jobs(client, [job.id], timeout=30)
    statuses = {route: answer.status_code for route, answer in answers.items()}
    assert statuses == {"progress": 403, "heartbeat": 403, "result": 403, "register": 409}
    assert as_itself.status_code == 403
    assert (meanwhile.status, meanwhile.node_id) == (JobStatus.PROCESSING, node_id)
    assert meanwhile.progress < 99
    assert (done.status, done.node_id) == (JobStatus.COMPLETED, node_id)
    assert done.metrics["bandwidth_mbps"] != 99999 and done.metrics["output_file_bytes"] > 0
    assert not any("dropped" in line for line in agent.lines), agent.log
