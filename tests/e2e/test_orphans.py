"""No orphan, no debris: whatever the agent was doing when SIGKILL hit it, its children die within 5 s.

Every process the agent starts mentions something of the test's own tmp dir
in its command line (the work dir for encodes and generated inputs, a stub's
path for probes), so the test scans /proc for survivors rather than trusting
the agent's own account. A restart then removes the partial files the killed
run left.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from agent.client import MasterClient
from agent.models import JobRequest
from agent.worker.engines.ffmpeg import find_ffmpeg
from tests.support import Processes, processes_mentioning, start_agent, start_master, start_process, wait_until_gone

pytestmark = pytest.mark.slow

# The bound: every child gone this long after the agent's SIGKILL.
ORPHAN_DEADLINE_S = 5.0


async def wait_for_processes(marker: str, timeout: float = 30.0) -> list[int]:
    with trio.fail_after(timeout):
        while not (pids := processes_mentioning(marker)):
            await trio.sleep(0.05)
    return pids


async def test_sigkill_during_input_generation_leaves_no_ffmpeg_and_a_restart_removes_the_partial_clip(
    procs: Processes, tmp_path: Path
) -> None:
    """A long 1080p clip is being generated; after SIGKILL nothing runs, and the next start deletes the half clip."""
    work = tmp_path / "work"
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        await client.submit_job(JobRequest.from_json({"scenario": "1080p30-h264", "parameters": {"duration": 60}}))
        agent, _ = await start_agent(procs, "agent", master_url, work, "--poll-interval", "0.1s")
        await agent.wait_for("generating test input")
        with trio.fail_after(30):
            while not (partials := list((work / "inputs").glob(".*.partial"))):
                await trio.sleep(0.05)
        await wait_for_processes(str(work))
        agent.process.kill()
        await agent.wait()
        await wait_until_gone(str(work), ORPHAN_DEADLINE_S)
    assert all(p.exists() for p in partials), "the killed run left its partial clip"
    # Restarted against an unreachable master: the clean-up comes before registration, so no job is claimed.
    again, _ = await start_agent(procs, "agent-again", "http://127.0.0.1:1", work)
    assert not any(p.exists() for p in partials), again.log
    assert "partial file(s) left" in again.log


async def test_sigkill_during_an_encode_leaves_no_ffmpeg(procs: Processes, tmp_path: Path) -> None:
    """A real-time encode is running; after SIGKILL no process of the work dir survives."""
    work = tmp_path / "work"
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        live = {"duration": 30, "realtime": True, "preset": "ultrafast"}
        await client.submit_job(JobRequest.from_json({"scenario": "240p30-h264", "parameters": live}))
        agent, _ = await start_agent(procs, "agent", master_url, work, "--poll-interval", "0.1s",
                                     "--log-level", "debug")
        await agent.wait_for(r"encoder started, pid \d+")
        await wait_for_processes(str(work / "outputs"))
        agent.process.kill()
        await agent.wait()
        await wait_until_gone(str(work), ORPHAN_DEADLINE_S)


async def test_sigkill_during_the_probes_at_start_leaves_no_probe(procs: Processes, tmp_path: Path) -> None:
    """Hardware-encoder probes and gst-inspect that hang at start die with the agent."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    hangs = "import time\ntime.sleep(3600)\n"
    (stubs / "ffmpeg").write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        "if any(a.endswith(('_nvenc', '_qsv', '_vaapi')) for a in sys.argv):\n    time.sleep(3600)\n"
        f"os.execv({find_ffmpeg()!r}, [{find_ffmpeg()!r}, *sys.argv[1:]])\n"
    )
    (stubs / "gst-inspect-1.0").write_text(f"#!{sys.executable}\n{hangs}")
    (stubs / "gst-launch-1.0").write_text(f"#!{sys.executable}\n{hangs}")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    agent = await start_process(
        procs, "agent",
        ["--master", "http://127.0.0.1:1", "--metrics-host", "127.0.0.1", "--metrics-port", "0",
         "--work-dir", str(tmp_path / "work"), "--ffmpeg", str(stubs / "ffmpeg"),
         "--allow-master-as-worker", "--skip-confirmation"],
        PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}",
    )
    with trio.fail_after(30):
        while not {"gst-inspect", "_nvenc"} <= {
            word for pid in processes_mentioning(str(stubs))
            for word in ("gst-inspect", "_nvenc") if word in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        }:
            await trio.sleep(0.05)
    agent.process.kill()
    await agent.wait()
    await wait_until_gone(str(stubs), ORPHAN_DEADLINE_S)
