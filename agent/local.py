"""One machine, no set-up: an embedded master and one worker agent in one nursery.

The master keeps its queue in memory and both talk over real HTTP on
127.0.0.1, so this mode runs exactly the code a farm runs.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from agent.client import MasterClient
from agent.config import AgentConfig, MasterConfig
from agent.console import format_table
from agent.master.server import serve_master
from agent.models import Job, JobRequest, JobStatus
from agent.worker.agent import Agent
from agent.worker.jobrunner import bandwidth_mbps

log = logging.getLogger(__name__)

# The agent is woken by nothing here, so it polls its local master often.
LOCAL_POLL_INTERVAL_S = 0.2
DISPLAY_INTERVAL_S = 1.0
RESULT_COLUMNS = ("seq", "status", "seconds", "fps", "speed", "in MB", "out MB", "Mbps", "output file / error")


@attrs.define
class LocalRun:
    scenario: str
    jobs: int
    max_concurrent_jobs: int
    duration: float
    work_dir: Path
    parameters: dict[str, Any] = attrs.field(factory=dict)
    ffmpeg: str = ""


def _result_row(job: Job) -> list[Any]:
    m = job.metrics
    # The header names the outputs directory; each file sits in <job id>/ there.
    output = Path(m.get("output_file", "")).name
    detail = output if job.status is JobStatus.COMPLETED else f"{job.failure_reason}: {job.error}"
    return [
        job.sequence_number, job.status.value, f"{m.get('duration', 0):.1f}", f"{m.get('fps', 0):.0f}",
        f"{m.get('speed', 0):.2f}x", f"{m.get('input_file_bytes', 0) / 1e6:.1f}",
        f"{m.get('output_file_bytes', 0) / 1e6:.1f}", f"{m.get('bandwidth_mbps', 0):.1f}", detail,
    ]


def summary(jobs: list[Job], makespan: float) -> str:
    """The per-job table and the aggregate bandwidth over the whole run."""
    moved_in = sum(job.metrics.get("input_file_bytes", 0) for job in jobs)
    moved_out = sum(job.metrics.get("output_file_bytes", 0) for job in jobs)
    completed = sum(job.status is JobStatus.COMPLETED for job in jobs)
    return "\n".join([
        format_table(RESULT_COLUMNS, [_result_row(job) for job in sorted(jobs, key=lambda j: j.sequence_number)]),
        "",
        f"{completed}/{len(jobs)} jobs completed in {makespan:.1f}s; "
        f"aggregate bandwidth {bandwidth_mbps(moved_in, moved_out, makespan):.1f} Mbps",
    ])


class _ProgressDisplay:
    """One status line: rewritten in place on a terminal, printed on change elsewhere."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def show(self, jobs: list[Job], elapsed: float) -> None:
        counts = {status: sum(job.status is status for job in jobs) for status in JobStatus}
        running = [f"#{job.sequence_number} {job.progress:.0f}%" for job in jobs if job.status is JobStatus.PROCESSING]
        line = (
            f"[{elapsed:5.1f}s] done {counts[JobStatus.COMPLETED]}, failed {counts[JobStatus.FAILED]}, "
            f"queued {counts[JobStatus.PENDING]}, running: {', '.join(running) or '-'}"
        )
        if self.tty:
            self.out.write("\r\033[K" + line)
        elif line != self.last:
            self.out.write(line + "\n")
        self.out.flush()
        self.last = line

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")


async def run_local(run: LocalRun, out: TextIO = sys.stdout) -> int:
    """Run the jobs; returns 0 when every job completed, 1 otherwise."""
    async with trio.open_nursery() as nursery:
        master_url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
        async with MasterClient(master_url) as client:
            config = AgentConfig(
                master_url=master_url,
                max_concurrent_jobs=run.max_concurrent_jobs,
                poll_interval=LOCAL_POLL_INTERVAL_S,
                metrics_host="127.0.0.1",
                metrics_port=0,
                work_dir=run.work_dir,
                ffmpeg=run.ffmpeg,
                # The embedded master is on this host by design.
                allow_master_as_worker=True,
            )
            agent = Agent.from_config(config, client, master_as_worker=True)
            parameters = {"duration": run.duration, **run.parameters}
            request = JobRequest.from_json({"scenario": run.scenario, "parameters": parameters})
            ids = [(await client.submit_job(request)).id for _ in range(run.jobs)]
            out.write(
                f"Running {run.jobs} x {run.scenario} ({run.duration:g}s each), "
                f"{run.max_concurrent_jobs} at a time; outputs in {run.work_dir / 'outputs'}/<job id>/\n"
            )
            started = time.monotonic()
            async with trio.open_nursery() as agent_nursery:  # the agent stops before its client closes
                await agent_nursery.start(agent.serve)
                jobs = await _watch(client, ids, started, _ProgressDisplay(out))
                makespan = time.monotonic() - started
                agent.drain()
        out.write(summary(jobs, makespan) + "\n")
        nursery.cancel_scope.cancel()
    return 0 if all(job.status is JobStatus.COMPLETED for job in jobs) else 1


async def _watch(client: MasterClient, ids: list[str], started: float, display: _ProgressDisplay) -> list[Job]:
    wanted = set(ids)
    while True:
        jobs = [job for job in await client.list_jobs() if job.id in wanted]
        display.show(jobs, time.monotonic() - started)
        if all(job.status.is_final for job in jobs):
            display.close()
            return jobs
        await trio.sleep(DISPLAY_INTERVAL_S)
