"""What an operator sees: nodes by name, drains that hold, node rows that are true, jobs that say why they wait.

Real processes: a master, agents running the real FFmpeg, and the ``ffrtmp``
commands (``python -m agent jobs|nodes ...``) as a user types them, on
127.0.0.1 with ports chosen by the OS. Each CLI check asserts the exit code
and the one line a user reads.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio

from agent.client import MasterClient
from agent.models import Job, JobRequest, JobStatus, Node
from tests.support import Answer, Processes, run_command, start_agent, start_master, wait_for_jobs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def ffrtmp(url: str, *args: str) -> Answer:
    """``python -m agent ARGS --master URL``, as a user runs the operator commands."""
    return await run_command(*args, "--master", url)


def one_error_line(answer: Answer) -> str:
    """The single ``error:`` line of a failed command."""
    lines = answer.err.strip().splitlines()
    assert answer.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), answer
    return lines[0]


def live_job(seconds: float) -> JobRequest:
    """A job that takes its duration in wall time, using little CPU."""
    return JobRequest.from_json(
        {"scenario": "144p30-h264", "parameters": {"duration": seconds, "realtime": True, "preset": "ultrafast"}}
    )


async def until_running(client: MasterClient, job_id: str) -> Job:
    with trio.fail_after(30):
        while (job := await client.get_job(job_id)).status is not JobStatus.PROCESSING:
            await trio.sleep(0.05)
    return job


async def node_named(client: MasterClient, name: str) -> Node:
    return await client.get_node(name)


async def test_nodes_are_addressed_by_name_or_id_in_show_drain_undrain_and_delete(
    procs: Processes, tmp_path: Path
) -> None:
    """'nodes drain vm:9091' works with the name 'nodes list' shows; an unknown name is one error line, exit 1."""
    _, url = await start_master(procs, tmp_path)
    await start_agent(procs, "vm", url, tmp_path / "vm", "--node-name", "vm:9091")
    async with MasterClient(url) as client:
        node = await node_named(client, "vm:9091")
    shown = await ffrtmp(url, "nodes", "show", node.id)
    assert shown.code == 0 and "vm:9091" in shown.out
    drained = await ffrtmp(url, "nodes", "drain", "vm:9091")
    assert drained.code == 0 and "draining" in drained.out, drained
    undrained = await ffrtmp(url, "nodes", "undrain", "vm:9091")
    assert undrained.code == 0 and "available" in undrained.out, undrained
    again = await ffrtmp(url, "nodes", "undrain", "vm:9091")
    assert "node vm:9091 is not drained" in one_error_line(again)
    missing = await ffrtmp(url, "nodes", "drain", "nowhere:1")
    assert "node nowhere:1 not found: give a node id or name as 'ffrtmp nodes list' shows them" in one_error_line(
        missing
    )
    deleted = await ffrtmp(url, "nodes", "delete", "vm:9091")
    assert deleted.code == 0 and "deleted" in deleted.out


async def test_a_drain_holds_while_the_agent_stays_idle_and_restarts_until_undrain(
    procs: Processes, tmp_path: Path
) -> None:
    """The running job finishes, the agent stays up and idle; a restarted agent is still drained; undrain runs the queue."""
    _, url = await start_master(procs, tmp_path)
    work = tmp_path / "w1"
    agent, _ = await start_agent(procs, "w1", url, work, "--node-name", "w1")
    async with MasterClient(url) as client:
        first = await client.submit_job(live_job(2))
        await until_running(client, first.id)
        assert (await ffrtmp(url, "nodes", "drain", "w1")).code == 0
        await wait_for_jobs(client, [first.id], timeout=30)
        assert (await client.get_job(first.id)).status is JobStatus.COMPLETED
        second = await client.submit_job(live_job(0.5))
        await agent.wait_for("drained this node")
        await trio.sleep(2.5)  # a heartbeat later the agent is still connected and has claimed nothing
        assert agent.process.returncode is None
        assert (await node_named(client, "w1")).status == "draining"
        status = await ffrtmp(url, "jobs", "status", str(second.sequence_number))
        assert status.code == 0 and "waiting: every node that can run it is draining" in status.out, status

        agent.signal(signal.SIGTERM)
        assert await agent.wait() == 0
        restarted, _ = await start_agent(procs, "w1-again", url, work, "--node-name", "w1")
        await restarted.wait_for("Registered with")
        await trio.sleep(2.5)
        assert (await node_named(client, "w1")).status == "draining"
        assert (await client.get_job(second.id)).status is JobStatus.PENDING

        undrained = await ffrtmp(url, "nodes", "undrain", "w1")
        assert undrained.code == 0 and "available" in undrained.out
        await wait_for_jobs(client, [second.id], timeout=30)
        assert (await client.get_job(second.id)).status is JobStatus.COMPLETED


async def test_a_canceled_job_leaves_the_node_row_at_once(procs: Processes, tmp_path: Path) -> None:
    """Right after 'jobs cancel' the node shows no current job, and its next heartbeat does not bring it back."""
    _, url = await start_master(procs, tmp_path)
    await start_agent(procs, "c1", url, tmp_path / "c1", "--node-name", "c1")
    async with MasterClient(url) as client:
        job = await client.submit_job(live_job(30))
        await until_running(client, job.id)
        assert (await node_named(client, "c1")).current_job_id == job.id
        canceled = await ffrtmp(url, "jobs", "cancel", job.id)
        assert canceled.code == 0 and "canceled" in canceled.out
        node = await node_named(client, "c1")
        assert (node.current_job_id, node.active_job_ids, node.status) == ("", [], "available")
        await trio.sleep(2.5)
        assert (await node_named(client, "c1")).active_job_ids == []


async def test_a_cleanly_stopped_agent_is_offline_at_once_and_pruned_after_the_retention(
    procs: Processes, tmp_path: Path
) -> None:
    """SIGTERM: the agent deregisters (offline without waiting for missed beats); --node-retention 2s forgets it."""
    master, url = await start_master(procs, tmp_path, "--heartbeat-interval", "2s", "--node-retention", "2s")
    agent, _ = await start_agent(procs, "gone", url, tmp_path / "gone", "--node-name", "gone")
    await agent.wait_for("Registered with")
    agent.signal(signal.SIGTERM)
    assert await agent.wait() == 0
    assert "Deregistered node" in agent.log
    async with MasterClient(url) as client:
        assert (await node_named(client, "gone")).status == "offline"
    # Housekeeping runs every half heartbeat interval and forgets nodes offline for over 2 s.
    await master.wait_for(r"Forgot node gone \(.*\): offline for over 2s \(--node-retention\)")
    listed = await ffrtmp(url, "nodes", "list", "--output", "json")
    assert listed.code == 0 and json.loads(listed.out)["nodes"] == []


async def test_max_jobs_is_the_agents_own_limit_also_after_delete_and_re_registration(
    procs: Processes, tmp_path: Path
) -> None:
    """Before any heartbeat, and after 'nodes delete' makes the agent register again, MAX_JOBS shows 2."""
    _, url = await start_master(procs, tmp_path)
    agent, _ = await start_agent(
        procs, "two", url, tmp_path / "two", "--node-name", "two", "--max-concurrent-jobs", "2",
        "--heartbeat-interval", "60s",
    )
    await agent.wait_for("Registered with")
    async with MasterClient(url) as client:
        assert (await node_named(client, "two")).max_concurrent_jobs == 2
        assert (await ffrtmp(url, "nodes", "delete", "two")).code == 0
        job = await client.submit_job(live_job(0.5))  # the agent's next claim finds its node gone
        await wait_for_jobs(client, [job.id], timeout=30)
        assert len([line for line in agent.lines if "Registered with" in line]) == 2
        listed = await ffrtmp(url, "nodes", "list", "--output", "json")
        assert listed.code == 0
        assert [node["max_concurrent_jobs"] for node in json.loads(listed.out)["nodes"]] == [2]


async def test_a_job_no_live_node_can_run_says_why_it_waits(procs: Processes, tmp_path: Path) -> None:
    """No node at all, then a node without NVENC: the status names the reason; exit 0."""
    _, url = await start_master(procs, tmp_path)
    submitted = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--param", "hardware=nvenc")
    assert submitted.code == 0 and "waiting: no node is online" in submitted.out, submitted
    await start_agent(procs, "cpu", url, tmp_path / "cpu", "--node-name", "cpu")
    status = await ffrtmp(url, "jobs", "status", "1", "--output", "json")
    assert status.code == 0
    job = json.loads(status.out)
    assert (job["status"], job["waiting"]) == ("pending", "waiting: no node offers nvenc")
    table = await ffrtmp(url, "jobs", "list")
    assert "waiting: no node offers nvenc" in table.out


async def test_an_unknown_param_key_is_refused_with_the_known_ones(procs: Processes, tmp_path: Path) -> None:
    """--param presett=fast: one error line naming the key, a guess and the known keys; exit 1; nothing queued."""
    _, url = await start_master(procs, tmp_path)
    refused = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--param", "presett=fast")
    line = one_error_line(refused)
    assert "invalid parameters: unknown key presett (did you mean preset?); known keys: bitrate, codec" in line
    listed = await ffrtmp(url, "jobs", "list", "--output", "json")
    assert json.loads(listed.out)["jobs"] == []


async def test_a_second_master_on_the_same_sqlite_file_warns(procs: Processes, tmp_path: Path) -> None:
    """The second master says another one uses the file and what to do; the first says nothing of it."""
    first, _ = await start_master(procs, tmp_path)
    second, _ = await start_master(procs, tmp_path)
    await second.wait_for(r"Another master is using the SQLite database .*master\.db.*--db-dsn")
    assert "Another master" not in first.log
