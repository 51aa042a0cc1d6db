"""The farm as an operator runs it: master and agents as separate OS processes, real FFmpeg.

Network rules: everything on 127.0.0.1, ports chosen by the OS (port 0), each
process stopped by the fixture that started it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.master.store import SqliteStore
from agent.models import FailureReason, JobRequest, JobStatus
from agent.worker.engines.ffmpeg import decodes_cleanly, probe_media
from tests.support import Processes, scrape_gauge, start_agent, start_master, start_process, wait_for_jobs

pytestmark = pytest.mark.slow


def job(scenario: str, **parameters: object) -> JobRequest:
    return JobRequest.from_json({"scenario": scenario, "parameters": parameters})


async def test_six_jobs_run_three_at_a_time_and_produce_the_promised_video(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """6 jobs, --max-concurrent-jobs 3: all complete, outputs decode, the gauge reaches 3 and never passes it."""
    _, master_url = await start_master(procs, tmp_path)
    wanted = {
        "720p30-h264": ("h264", 1280, 720),
        "480p30-vp9": ("vp9", 854, 480),
        "360p30-h265": ("hevc", 640, 360),
    }
    async with MasterClient(master_url) as client:
        ids = [
            (await client.submit_job(job(scenario, duration=2, preset="ultrafast"))).id
            for scenario in wanted
            for _ in range(2)
        ]
        _, status_url = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--max-concurrent-jobs", "3", "--poll-interval", "1s"
        )
        seen: list[float] = []
        async with httpx.AsyncClient(base_url=status_url) as http, trio.open_nursery() as nursery:

            async def sample_active_jobs() -> None:
                while True:
                    seen.append(await scrape_gauge(http, "ffrtmp_active_jobs"))
                    await trio.sleep(0.05)

            nursery.start_soon(sample_active_jobs)
            jobs = await wait_for_jobs(client, ids, timeout=120)
            nursery.cancel_scope.cancel()

    assert [j.status for j in jobs] == [JobStatus.COMPLETED] * 6, [(j.status, j.error) for j in jobs]
    assert max(seen) == 3, seen
    for finished in jobs:
        codec, width, height = wanted[finished.scenario]
        info = await probe_media(ffmpeg, finished.metrics["output_file"])
        assert (info.codec, info.width, info.height) == (codec, width, height), finished.scenario
        assert abs(info.duration - 2.0) < 0.2, info
        assert await decodes_cleanly(ffmpeg, finished.metrics["output_file"])
        assert finished.metrics["output_file_bytes"] == Path(finished.metrics["output_file"]).stat().st_size


async def test_free_slots_fill_back_to_back_not_one_per_poll_interval(procs: Processes, tmp_path: Path) -> None:
    """With --poll-interval 30s, three queued jobs are all claimed within seconds of the agent starting."""
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        # Real-time jobs: each takes its 4 s of wall time, so all three overlap.
        ids = [
            (await client.submit_job(job("240p30-h264", duration=4, realtime=True))).id for _ in range(3)
        ]
        agent, _ = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--max-concurrent-jobs", "3", "--poll-interval", "30s"
        )
        await agent.wait_for(r"Starting job polling loop \(max concurrent jobs: 3\)\.\.\.")
        with trio.fail_after(3):
            while True:
                jobs = [await client.get_job(job_id) for job_id in ids]
                if all(j.started_at is not None for j in jobs):
                    break
                await trio.sleep(0.1)
        await agent.wait_for(r"At max concurrent jobs \(3/3\), waiting\.\.\.")
        for job_id in ids:
            await agent.wait_for(rf"Received job: {job_id} \(scenario: 240p30-h264\)")
        jobs = await wait_for_jobs(client, ids, timeout=60)
    assert all(j.status is JobStatus.COMPLETED for j in jobs)
    starts = sorted(j.started_at for j in jobs if j.started_at)
    assert (starts[-1] - starts[0]).total_seconds() < 2.0, starts


async def test_two_agents_on_one_master_run_every_job_exactly_once(procs: Processes, tmp_path: Path) -> None:
    """20 short jobs, two agents polling: each job ran on exactly one agent, once."""
    _, master_url = await start_master(procs, tmp_path)
    for name in ("agent-a", "agent-b"):
        agent, _ = await start_agent(
            procs, name, master_url, tmp_path / name, "--max-concurrent-jobs", "2", "--poll-interval", "0.2s"
        )
        await agent.wait_for("Starting job polling loop")
    async with MasterClient(master_url) as client:
        ids = [(await client.submit_job(job("144p30-h264", duration=0.5))).id for _ in range(20)]
        jobs = await wait_for_jobs(client, ids, timeout=120)
        nodes = await client.list_nodes()
    assert all(j.status is JobStatus.COMPLETED and j.retry_count == 0 for j in jobs)
    assert len(nodes) == 2, "each agent is its own node"
    ran = [p.parent.name for name in ("agent-a", "agent-b") for p in (tmp_path / name / "outputs").glob("*/*")]
    assert sorted(ran) == sorted(ids), "every job's output exists once, on one agent"
    assert {j.node_id for j in jobs} == {n.id for n in nodes}, "both agents did work"


async def test_agent_without_the_api_key_exits_with_one_clear_message(procs: Processes, tmp_path: Path) -> None:
    """Master with a key, agent without: a non-zero exit within seconds naming --api-key and the variable."""
    _, master_url = await start_master(procs, tmp_path, FFMPEG_RTMP_API_KEY="s3cret-key")
    agent = await start_process(
        procs, "agent",
        ["--master", master_url, "--metrics-host", "127.0.0.1", "--metrics-port", "0",
         "--work-dir", str(tmp_path / "work"), "--allow-master-as-worker", "--skip-confirmation"],
    )
    code = await agent.wait(timeout=15)
    assert code != 0
    mentions = [line for line in agent.lines if "--api-key" in line and "FFMPEG_RTMP_API_KEY" in line]
    assert len(mentions) == 1, agent.log
    assert "Traceback" not in agent.log
    assert "s3cret-key" not in agent.log


async def test_bad_jobs_fail_as_user_error_and_the_agent_keeps_serving(procs: Processes, tmp_path: Path) -> None:
    """An unknown scenario and an injected bitrate fail as user_error; the jobs behind them complete.

    Our master refuses such jobs with 400, so they are written straight into its
    database, as an older master or another tool could have: the agent must
    still guard itself.
    """
    _, master_url = await start_master(procs, tmp_path)
    async with await SqliteStore.open(str(tmp_path / "master.db")) as store:
        bad = [
            (await store.submit(job("999p30-h264x"), max_retries=3)).id,
            (await store.submit(job("240p30-h264", bitrate="1M; rm -rf /", duration=1), max_retries=3)).id,
        ]
    async with MasterClient(master_url) as client:
        good = [(await client.submit_job(job("240p30-h264", duration=1))).id for _ in range(2)]
        await start_agent(procs, "agent", master_url, tmp_path / "work", "--poll-interval", "0.2s")
        jobs = {j.id: j for j in await wait_for_jobs(client, bad + good, timeout=60)}
    assert [jobs[i].failure_reason for i in bad] == [FailureReason.USER_ERROR.value] * 2
    assert "scenario" in jobs[bad[0]].error
    assert "bitrate" in jobs[bad[1]].error
    assert all(jobs[i].retry_count == 0 for i in bad), "a bad job is not retried"
    assert [jobs[i].status for i in good] == [JobStatus.COMPLETED] * 2
