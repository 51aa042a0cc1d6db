"""The agent under faults, as separate OS processes: nothing lost, nothing left behind.

Fakes appear only to inject the fault: a proxy in front of the real master
that answers 500 while told to, and an encoder stub that always crashes.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent.client import MasterClient
from agent.models import Job, JobRequest, JobStatus
from agent.worker.engines.ffmpeg import decodes_cleanly
from agent.worker.status_server import serve_status
from tests.support import Processes, RunningProcess, start_agent, start_master, start_process, wait_for_jobs

pytestmark = pytest.mark.slow


def live_job(seconds: float) -> JobRequest:
    """A job that takes its duration in wall time (read at the native rate), using little CPU."""
    return JobRequest.from_json(
        {"scenario": "240p30-h264", "parameters": {"duration": seconds, "realtime": True, "preset": "ultrafast"}}
    )


def encoder_pids(agent: RunningProcess) -> list[int]:
    """Every encoder the agent started (it logs each at debug level)."""
    return [int(m.group(1)) for line in agent.lines if (m := re.search(r"encoder started, pid (\d+)", line))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def wait_until_processing(client: MasterClient, ids: list[str], agent: RunningProcess) -> None:
    with trio.fail_after(30):
        while True:
            statuses = [(await client.get_job(i)).status for i in ids]
            if statuses == [JobStatus.PROCESSING] * len(ids) and len(encoder_pids(agent)) >= len(ids):
                return
            await trio.sleep(0.1)


@attrs.define
class FaultyProxy:
    """Forwards to the real master, or answers 500 while ``failing``; counts claims."""

    target: str
    failing: bool = False
    claims: int = 0

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            if request.url.path == "/jobs/next":
                self.claims += 1
            if self.failing:
                return Response("injected failure", status_code=500)
            forwarded = {"content-type": "application/json"}
            if "authorization" in request.headers:
                forwarded["authorization"] = request.headers["authorization"]
            async with httpx.AsyncClient(base_url=self.target) as http:
                answer = await http.request(
                    request.method, f"{request.url.path}?{request.url.query}",
                    content=await request.body(), headers=forwarded,
                )
            return Response(answer.content, answer.status_code, media_type="application/json")

        methods = ["GET", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


async def test_a_failing_master_opens_the_breaker_which_probes_and_closes_when_it_heals(
    procs: Processes, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """500s pause claiming (no claims while open, /ready 503); a healed master gets a probe and work resumes."""
    _, master_url = await start_master(procs, tmp_path)
    proxy = FaultyProxy(master_url)
    [proxy_url] = await nursery.start(serve_status, proxy.app(), "127.0.0.1", 0)
    agent, status_url = await start_agent(
        procs, "agent", proxy_url, tmp_path / "work", "--poll-interval", "0.1s",
        "--breaker-threshold", "3", "--breaker-cooldown", "4s",
    )
    await agent.wait_for("Starting job polling loop")
    proxy.failing = True
    await agent.wait_for("Circuit breaker open")
    claims_when_opened = proxy.claims
    async with httpx.AsyncClient(base_url=status_url) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 503 and "circuit breaker" in ready.text
        await trio.sleep(2)
        assert proxy.claims == claims_when_opened, "no claims while the breaker is open"
        assert agent.process.returncode is None, "the agent stays alive"
        proxy.failing = False
        async with MasterClient(master_url) as client:
            job = await client.submit_job(live_job(0.5))
            await agent.wait_for("Circuit breaker half-open")
            await agent.wait_for("Circuit breaker closed")
            [done] = await wait_for_jobs(client, [job.id], timeout=30)
        assert done.status is JobStatus.COMPLETED
        assert (await http.get("/ready")).status_code == 200
    assert sum("master" in line and "retrying with backoff" in line for line in agent.lines) == 1, agent.log


async def test_a_crashing_encoder_stops_the_agent_taking_jobs_after_the_threshold(
    procs: Processes, tmp_path: Path
) -> None:
    """Every job fails for platform reasons: after 3 the breaker opens; the queue keeps the rest."""
    stub = tmp_path / "crashing-ffmpeg"
    stub.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('Segmentation fault\\n')\nsys.exit(139)\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        ids = [(await client.submit_job(live_job(1))).id for _ in range(6)]
        agent, _ = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--ffmpeg", str(stub), "--poll-interval", "0.1s",
            "--breaker-threshold", "3", "--breaker-cooldown", "60s",
        )
        await agent.wait_for("Circuit breaker open")
        await trio.sleep(1.5)
        jobs = [await client.get_job(i) for i in ids]
    assert all(j.status is JobStatus.PENDING for j in jobs), [(j.status, j.error) for j in jobs]
    assert sum(j.retry_count for j in jobs) == 3, "exactly the threshold's worth of failed attempts"
    assert len(re.findall("Received job", agent.log)) == 3


async def test_sigterm_lets_running_jobs_finish_within_the_grace(procs: Processes, tmp_path: Path) -> None:
    """Two running jobs, a long grace: both complete and are reported; exit 0; no new claims."""
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        running = [(await client.submit_job(live_job(3))).id for _ in range(2)]
        agent, _ = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--max-concurrent-jobs", "2",
            "--poll-interval", "0.1s", "--shutdown-grace", "60s", "--log-level", "debug",
        )
        await wait_until_processing(client, running, agent)
        queued = (await client.submit_job(live_job(1))).id
        agent.signal(signal.SIGTERM)
        assert await agent.wait(timeout=30) == 0, agent.log
        jobs = await wait_for_jobs(client, running, timeout=5)
        assert (await client.get_job(queued)).status is JobStatus.PENDING
    assert all(j.status is JobStatus.COMPLETED for j in jobs)
    assert not any(alive(pid) for pid in encoder_pids(agent))


async def test_sigterm_with_a_short_grace_stops_encoders_cleanly_and_requeues(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """Short grace: exit 0 in time, the partial outputs play, the master re-queues, no encoder survives."""
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        ids = [(await client.submit_job(live_job(30))).id for _ in range(2)]
        agent, _ = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--max-concurrent-jobs", "2",
            "--poll-interval", "0.1s", "--shutdown-grace", "1s", "--kill-timeout", "3s", "--log-level", "debug",
        )
        await wait_until_processing(client, ids, agent)
        await trio.sleep(2)  # some video written
        agent.signal(signal.SIGTERM)
        # grace 1 s + kill timeout 3 s + a few seconds of process start and reporting
        assert await agent.wait(timeout=12) == 0, agent.log
        jobs = [await client.get_job(i) for i in ids]
    assert all(j.status is JobStatus.PENDING for j in jobs), "re-queued at once"
    assert all("worker shutdown" in j.error for j in jobs)
    assert not any(alive(pid) for pid in encoder_pids(agent))
    outputs = list((tmp_path / "work" / "outputs").glob("*/*.mp4"))
    assert len(outputs) == 2
    for output in outputs:
        assert await decodes_cleanly(ffmpeg, output), f"{output} is not playable"


async def test_sigkill_of_the_agent_leaves_no_encoder_and_the_master_requeues(
    procs: Processes, tmp_path: Path
) -> None:
    """The guardian kills the orphaned encoder; the silent node's job goes back to the queue."""
    _, master_url = await start_master(procs, tmp_path, "--heartbeat-interval", "1s")
    async with MasterClient(master_url) as client:
        job_id = (await client.submit_job(live_job(30))).id
        agent, _ = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--heartbeat-interval", "1s", "--log-level", "debug"
        )
        await wait_until_processing(client, [job_id], agent)
        [pid] = encoder_pids(agent)
        agent.process.kill()
        await agent.wait()
        with trio.fail_after(5):
            while alive(pid):
                await trio.sleep(0.1)
        with trio.fail_after(15):
            while (await client.get_job(job_id)).status is not JobStatus.PENDING:
                await trio.sleep(0.2)


async def test_the_agent_as_pid_1_drains_on_sigterm(procs: Processes, tmp_path: Path) -> None:
    """In a new PID namespace (as in a container without an init) SIGTERM still drains and exits 0."""
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        job_id = (await client.submit_job(live_job(2))).id
        agent = await start_process(
            procs, "agent-pid1",
            ["--master", master_url, "--metrics-host", "127.0.0.1", "--metrics-port", "0",
             "--work-dir", str(tmp_path / "work"), "--poll-interval", "0.1s", "--log-level", "debug",
             "--allow-master-as-worker", "--skip-confirmation"],
            wrapper=["unshare", "--pid", "--fork", "--mount-proc"],
        )
        await wait_until_processing(client, [job_id], agent)
        pid1 = int(Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children").read_text().split()[0])
        assert Path(f"/proc/{pid1}/status").read_text().count("NSpid:") == 1
        assert re.search(r"NSpid:\s+\d+\s+1$", Path(f"/proc/{pid1}/status").read_text(), re.M)
        os.kill(pid1, signal.SIGTERM)
        assert await agent.wait(timeout=30) == 0, agent.log
        [job] = await wait_for_jobs(client, [job_id], timeout=5)
    assert job.status is JobStatus.COMPLETED
    assert "Agent stopped" in agent.log


async def test_cancel_from_the_cli_stops_the_encoder_within_seconds(procs: Processes, tmp_path: Path) -> None:
    """`jobs cancel` on a running job: its encoder is gone soon after, and the job ends canceled."""
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        job_id = (await client.submit_job(live_job(30))).id
        agent, _ = await start_agent(procs, "agent", master_url, tmp_path / "work", "--log-level", "debug")
        await wait_until_processing(client, [job_id], agent)
        [pid] = encoder_pids(agent)
        cli = await start_process(procs, "cli", ["jobs", "cancel", job_id, "--master", master_url])
        assert await cli.wait() == 0, cli.log
        await agent.wait_for(f"Job {job_id}: (canceled|no longer leased to this node) on the master; stopping its encoder")
        # Told within a progress interval; the encoder then gets 2 s.
        with trio.fail_after(3):
            while alive(pid):
                await trio.sleep(0.05)
        await agent.wait_for(f"Job {job_id} canceled")
        job = await client.get_job(job_id)
    assert job.status is JobStatus.CANCELED


async def test_a_result_the_master_missed_arrives_once_after_both_restart(
    procs: Processes, tmp_path: Path
) -> None:
    """Master down when the job ends: the result waits in the outbox, survives an agent restart, lands once."""
    master, master_url = await start_master(procs, tmp_path)
    port = master_url.rsplit(":", 1)[1]
    work = tmp_path / "work"
    async with MasterClient(master_url) as client:
        job_id = (await client.submit_job(live_job(3))).id
        agent, _ = await start_agent(procs, "agent", master_url, work, "--metrics-port", "0", "--log-level", "debug")
        await wait_until_processing(client, [job_id], agent)
    master.signal(signal.SIGTERM)
    await master.wait()
    await agent.wait_for("kept in", timeout=30)
    assert list((work / "outbox").glob("*.json"))
    agent.signal(signal.SIGTERM)
    assert await agent.wait() == 0

    again = await start_process(
        procs, "master-again", ["master", "--host", "127.0.0.1", "--port", port, "--db", str(tmp_path / "master.db")]
    )
    await again.wait_for("listening on")
    second, _ = await start_agent(procs, "agent-again", master_url, work)
    await second.wait_for(f"Delivered the kept result of job {job_id}")
    async with MasterClient(master_url) as client:
        job: Job = await client.get_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.retry_count == 0
    assert not list((work / "outbox").glob("*.json"))
    assert (agent.log + second.log).count(f"Received job: {job_id}") == 1, "the job ran once"
    assert again.log.count(f"Result for job {job_id}") == 1


async def test_an_agent_registers_again_when_the_master_restarts_empty(procs: Processes, tmp_path: Path) -> None:
    """A master restarted with an in-memory store forgets the node: the agent registers again and works on."""
    args = ["master", "--host", "127.0.0.1", "--port", "0", "--db", ""]
    first = await start_process(procs, "master", args)
    master_url = (await first.wait_for(r"listening on (http://\S+)")).group(1)
    agent, _ = await start_agent(procs, "agent", master_url, tmp_path / "work", "--heartbeat-interval", "0.5s")
    await agent.wait_for("Registered with")
    first.signal(signal.SIGTERM)
    await first.wait()
    port = master_url.rsplit(":", 1)[1]
    second = await start_process(procs, "master-again", [*args[:-3], port, "--db", ""])
    await second.wait_for("listening on")
    await agent.wait_for("registering again")
    async with MasterClient(master_url) as client:
        job = await client.submit_job(live_job(0.5))
        [done] = await wait_for_jobs(client, [job.id], timeout=30)
    assert done.status is JobStatus.COMPLETED


async def test_a_job_over_its_timeout_is_stopped_and_fails_as_timeout(procs: Processes, tmp_path: Path) -> None:
    """resource_limits.timeout_sec stops an overrunning encoder; the agent takes the next job."""
    _, master_url = await start_master(procs, tmp_path, "--max-retries", "0")
    slow = JobRequest.from_json(
        {"scenario": "240p30-h264",
         "parameters": {"duration": 30, "realtime": True, "resource_limits": {"timeout_sec": 1}}}
    )
    async with MasterClient(master_url) as client:
        slow_id = (await client.submit_job(slow)).id
        next_id = (await client.submit_job(live_job(0.5))).id
        agent, _ = await start_agent(procs, "agent", master_url, tmp_path / "work", "--log-level", "debug")
        jobs = {j.id: j for j in await wait_for_jobs(client, [slow_id, next_id], timeout=30)}
    assert jobs[slow_id].status is JobStatus.FAILED
    assert jobs[slow_id].failure_reason == "timeout"
    assert jobs[next_id].status is JobStatus.COMPLETED
    assert not any(alive(pid) for pid in encoder_pids(agent))
