"""One machine, no set-up: an embedded master and one worker agent in one nursery.

The master keeps its queue in memory and both talk over real HTTP on
127.0.0.1, so this mode runs exactly the code a farm runs.

With ``--input`` each media file is one job, read in place: the embedded
worker is allowed the files' directories as its ``--input-dir`` and the
output directory as its ``--output-dir``, so the worker's path rules are the
ones a farm applies. Without it, ``--jobs`` jobs encode a generated test clip.

Exit codes: 0 when every job completed, 1 when one did not, 2 when an option
has a value no job could run with (checked before anything starts), and
128 + the signal after Ctrl-C (130) or SIGTERM (143), which stop the run:
unfinished jobs are canceled, encoders stopped, and the table shows what
finished.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import attrs
import trio

from agent.client import MasterClient, StateConflict
from agent.config import AgentConfig, MasterConfig
from agent.console import format_table
from agent.local_plan import LocalPlan, LocalRun, OptionRejected
from agent.master.server import serve_master
from agent.models import Job, JobStatus
from agent.scenarios import EncodeSpec
from agent.worker.agent import Agent
from agent.worker.jobrunner import bandwidth_mbps

log = logging.getLogger(__name__)

# The agent is woken by nothing here, so it polls its local master often.
LOCAL_POLL_INTERVAL_S = 0.2
DISPLAY_INTERVAL_S = 1.0
RESULT_COLUMNS = ("seq", "status", "seconds", "fps", "speed", "in MB", "out MB", "Mbps", "output file / error")
# An option no job could run with; the same code as argparse's usage errors.
EXIT_BAD_OPTION = 2

__all__ = ["EXIT_BAD_OPTION", "LocalRun", "OptionRejected", "run_local", "summary"]


def _result_row(job: Job) -> list[Any]:
    m = job.metrics
    # An input file's output is named for it, so its row gives the whole path. A generated
    # clip's outputs sit in <job id>/ in the directory the header names.
    given = job.parameters.get("input")
    output = m.get("output_file", "") if given else Path(m.get("output_file", "")).name
    failure = ": ".join(filter(None, (Path(given).name if given else "", job.failure_reason, job.error))) or "-"
    detail = output if job.status is JobStatus.COMPLETED else failure
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
    """One status line: rewritten in place on a terminal, printed on change elsewhere.

    ``generating()`` says whether the run's test input is still being made:
    jobs then show ``generating input`` rather than sitting at ``0%``.
    """

    def __init__(self, out: TextIO, generating: Callable[[], bool]) -> None:
        self.out = out
        self.generating = generating
        self.tty = out.isatty()
        self.last = ""

    def _running(self, job: Job) -> str:
        if job.progress == 0 and self.generating():
            return f"#{job.sequence_number} generating input"
        return f"#{job.sequence_number} {job.progress:.0f}%"

    def show(self, jobs: list[Job], elapsed: float) -> None:
        counts = {status: sum(job.status is status for job in jobs) for status in JobStatus}
        running = [self._running(job) for job in jobs if job.status is JobStatus.PROCESSING]
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


@attrs.define
class _Interrupt:
    """The first SIGINT or SIGTERM stops the run; it is kept for the exit code.

    Each phase of the run is guarded by its own cancel scope (a scope is
    entered once), cancelled by the signal, or at once when it came before.
    """

    signum: int = 0
    _scopes: list[trio.CancelScope] = attrs.field(factory=list)

    def guard(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self.signum:
            scope.cancel()
        self._scopes.append(scope)
        return scope

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not self.signum:
                    self.signum = signum
                    log.info("%s: stopping the run", signal.Signals(signum).name)
                    for scope in self._scopes:
                        scope.cancel()


async def run_local(run: LocalRun, out: TextIO = sys.stdout) -> int:
    """Run the jobs and print their table; the exit code (see the module's docstring).

    A bad option ends here with one ``error:`` line on stderr, before the
    master starts or an input is generated. Ctrl-C or SIGTERM cancels the jobs
    that have not finished, stops their encoders, and prints the table.
    """
    try:
        plan = run.plan()
    except OptionRejected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_OPTION
    interrupt = _Interrupt()
    jobs: list[Job] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(interrupt.watch)
        with interrupt.guard():
            master_url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
        if not interrupt.signum:
            async with MasterClient(master_url) as client:
                jobs, makespan = await _run_jobs(run, plan, client, interrupt, out)
            out.write(summary(jobs, makespan) + "\n")
        nursery.cancel_scope.cancel()
    if interrupt.signum:
        name = signal.Signals(interrupt.signum).name
        print(f"interrupted by {name}: unfinished jobs were canceled", file=sys.stderr)
        return 128 + interrupt.signum
    return 0 if all(job.status is JobStatus.COMPLETED for job in jobs) else 1


def _agent_config(run: LocalRun, plan: LocalPlan, master_url: str) -> AgentConfig:
    return AgentConfig(
        # The inputs are read where they are, and the outputs written where the user said.
        input_dirs=plan.input_dirs,
        output_dir=plan.output_dir,
        master_url=master_url,
        max_concurrent_jobs=run.max_concurrent_jobs,
        poll_interval=LOCAL_POLL_INTERVAL_S,
        metrics_host="127.0.0.1",
        metrics_port=0,
        work_dir=run.work_dir,
        ffmpeg=run.ffmpeg,
        # The embedded master is on this host by design.
        allow_master_as_worker=True,
        ladder_mode=run.ladder_mode,
    )


def _generating(agent: Agent, spec: EncodeSpec) -> Callable[[], bool]:
    """Whether the generated clip the jobs wait for is still being made."""
    if spec.input or spec.duration is None:
        return lambda: False
    clip = agent.runner.inputs.path_for(spec.width, spec.height, spec.fps, spec.duration)
    return lambda: not clip.exists()


def _announcement(run: LocalRun, plan: LocalPlan) -> str:
    """The line that says what runs, how much of each input, and where the outputs go."""
    jobs = len(plan.requests)
    files = f"{jobs} file{'s' if jobs > 1 else ''}" if plan.input_dirs else str(jobs)
    length = f"{plan.spec.duration:g}s each" if plan.spec.duration is not None else "whole input"
    # Outputs of input files are named for them; a generated clip's go in a directory per job.
    where = f"{plan.output_dir}/" if plan.input_dirs else f"{plan.output_dir or run.work_dir / 'outputs'}/<job id>/"
    ladder = plan.spec.ladder
    what = run.scenario if ladder is None else f"ladder {','.join(r.text for r in ladder.rungs)} ({ladder.package})"
    return f"Running {files} x {what} ({length}), {run.max_concurrent_jobs} at a time; outputs in {where}\n"


async def _run_jobs(
    run: LocalRun, plan: LocalPlan, client: MasterClient, interrupt: _Interrupt, out: TextIO
) -> tuple[list[Job], float]:
    """Submit, run and watch the jobs until all are final or a signal stops them; the jobs and the makespan."""
    agent = Agent.from_config(_agent_config(run, plan, client.base_url), client, master_as_worker=True)
    display = _ProgressDisplay(out, _generating(agent, plan.spec))
    ids: list[str] = []
    started = time.monotonic()
    async with trio.open_nursery() as agent_nursery:  # the agent stops before its client closes
        with interrupt.guard():
            ids = [(await client.submit_job(request)).id for request in plan.requests]
            out.write(_announcement(run, plan))
            started = time.monotonic()
            await agent_nursery.start(agent.serve)
            await _watch(client, ids, started, display)
        display.close()
        if interrupt.signum:
            # Stop claiming and stop the encoders now, then cancel what is left so the table says so.
            agent.cancel_now()
            await _cancel_unfinished(client, ids)
        else:
            agent.drain()
    return await _listed(client, ids), time.monotonic() - started


async def _listed(client: MasterClient, ids: list[str]) -> list[Job]:
    wanted = set(ids)
    return [job for job in await client.list_jobs() if job.id in wanted]


async def _cancel_unfinished(client: MasterClient, ids: list[str]) -> None:
    for job in await _listed(client, ids):
        if not job.status.is_final:
            try:
                await client.cancel_job(job.id)
            except StateConflict:
                pass  # it finished meanwhile


async def _watch(client: MasterClient, ids: list[str], started: float, display: _ProgressDisplay) -> None:
    while True:
        jobs = await _listed(client, ids)
        display.show(jobs, time.monotonic() - started)
        if all(job.status.is_final for job in jobs):
            return
        await trio.sleep(DISPLAY_INTERVAL_S)
