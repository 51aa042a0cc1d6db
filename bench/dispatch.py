"""The agent's own cost, with an encoder that does nothing but wait: slot utilisation, dispatch latency, CPU.

Usage (from the repository root; needs the ``[bench]`` extra, ``pip install '.[bench]'``)::

    python -m bench.dispatch --durations 0.2,1,5 --concurrency 1,4,16 --repeats 3
    python -m bench.dispatch --cells 0.2x4,1x4,0.2x16 --peer celery --before /tmp/before-agent
    python bench/dispatch.py --help

The encoder is a stub that marks when it started and sleeps D seconds, so
whatever is not D is dispatch: claiming, starting the process, reporting the
result. Three measurements, with the real master (in this process) and real
agent processes:

- Slot utilisation for each D and concurrency C: ``rounds x C`` jobs wait in
  the queue when the agent starts; utilisation is the ideal makespan
  (``rounds x D``) over the measured one, from the first stub's start to the
  last stub's end, as the stubs wrote them (the Celery peer's stub writes the
  same marks, so both sides are timed between the same events). The agent's
  makespan on its master (first claim to last result, which adds a claim's
  and a result's round trip) is reported beside it. The agent's CPU time per
  job comes from the same runs. The same jobs, at ``--go-concurrency``, also go through
  :class:`~bench.goloop.GoLoop`, the original Go agent's one claim per tick.
- Dispatch latency, from ``POST /jobs`` to the encoder's start, for a job
  submitted to an idle agent, with each way the master can tell it: push
  (event channel, with long-poll: the agent's default), long-poll alone, and
  plain polling (the master answers as the original Go master, without
  either). Submissions come at random moments so polling is measured at
  every phase of its interval.

Side by side in the same run, interleaved (each repeat walks the cells in the
opposite order and the sides take turns): ``--peer celery`` runs a Celery 5
worker with Redis on the same cells and the same stub process
(:mod:`bench.celery_peer`), and ``--before PATH`` runs the agent of another
checkout (``git worktree add PATH <commit>``) beside this one's. The master
is this checkout's in every run. Goal lines compare the agent with Celery.

Writes ``<name>.json``, ``.csv`` (utilisation rows) and ``.md`` into
``--out``, by default a new ``bench-results/<name>-<date>-<time>/``. Each
goal line says what it measures; a missed goal exits 1 only with ``--check``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file too: import this checkout

import attrs
import trio

from agent.client import MasterClient
from agent.config import parse_duration
from agent.models import Job, JobRequest, JobStatus, NodeRegistration
from agent.scenarios import build_spec
from agent.worker.inputs import InputCache
from bench._farm import (
    BenchAgent,
    BenchMaster,
    checkout_path,
    duration_flag,
    serve_bench_master,
    start_bench_agent,
    wait_until_final,
)
from bench._keepalive import KeptAlive
from bench._report import (
    GOALS_NOTE,
    add_output_flags,
    fresh_out_dir,
    goal,
    goal_line,
    goals_exit_code,
    machine,
    markdown_table,
    median,
    percentile,
    say,
    work_directory,
    write_outputs,
)
from bench.celery_peer import CeleryPeer, CeleryUnavailable, open_celery_peer
from bench.goloop import GoLoop
from tests.support import Processes, wait_for_jobs

# Every job is the same small one: the stub ignores what it asks for, only its own D counts.
REQUEST = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 1}})
# Latency is measured with short jobs: the sample rate is what it costs.
LATENCY_JOB_S = 0.2
# Modes of dispatch: (name, push on the master, long-poll on the master).
MODES = (("push", True, True), ("long-poll", False, True), ("polling", False, False))
# How long an agent gets to show it uses a mode before the mode counts as absent.
MODE_SHOWN_WITHIN_S = 5.0
BAR_UTILISATION = {(1.0, 4): 0.97, (0.2, 4): 0.90}
# The agent against Celery on the same cells: at least its utilisation, at most 1.5x its submit-to-start p50.
BAR_VS_CELERY_UTILISATION = 1.0
BAR_VS_CELERY_LATENCY = 1.5
AGENT, BEFORE, CELERY = "agent", "agent before", "Celery"

_STUB = """\
#!{bash}
# A stand-in encoder that works for {seconds} s; see bench/dispatch.py.
started=${{EPOCHREALTIME:-$(date +%s.%N)}}
for output; do :; done
case " $* " in
  *_nvenc\\ *|*_qsv\\ *|*_vaapi\\ *) exit 1 ;;  # no hardware encoders here
esac
case "$output" in
  -|pipe:*) output="" ;;
  *) printf '%s\\n' "$started" > "$output" ;;
esac
case " $* " in
  *" -progress "*)
    {sleep} {seconds}
    [ -z "$output" ] || printf '%s\\n' "${{EPOCHREALTIME:-$(date +%s.%N)}}" >> "$output" ;;
esac
"""

UTILISATION_COLUMNS = ("loop", "D s", "jobs at once", "jobs", "ideal s", "measured s", "utilisation",
                       "agent CPU ms per job", "claim to result s", "utilisation, claim to result")
LATENCY_COLUMNS = ("dispatch", "samples", "p50 ms", "p95 ms", "max ms")


def write_stub(directory: Path, seconds: float) -> Path:
    """A bash script: it writes its start time into its output file (the last argument), sleeps, then adds its end.

    bash's ``EPOCHREALTIME`` gives the start to the microsecond without
    starting another process; a probe of a hardware encoder fails, as on a
    machine without one; test-input generation just writes the file.
    """
    bash, sleep = shutil.which("bash"), shutil.which("sleep")
    if bash is None or sleep is None:
        raise SystemExit("bench.dispatch needs bash and sleep on PATH for its stub encoder")
    path = directory / f"stub-{seconds:g}s.sh"
    path.write_text(_STUB.format(bash=bash, sleep=sleep, seconds=f"{seconds:g}"))
    path.chmod(0o755)
    return path


def stub_marks(marker: Path) -> tuple[float, float]:
    """The wall-clock start and end a stub (this bench's or the Celery peer's) wrote into ``marker``."""
    start, end = marker.read_text().split()
    return float(start), float(end)


def job_marks(outputs: Path, job_id: str) -> tuple[float, float]:
    """The wall-clock start and end the stub wrote into the job's output file."""
    [output] = (outputs / job_id).iterdir()
    return stub_marks(output)


def stub_span(marks: Sequence[tuple[float, float]]) -> float:
    """First stub start to last stub end: the makespan as the stubs themselves saw it, on every side alike."""
    return max(end for _, end in marks) - min(start for start, _ in marks)


@attrs.frozen
class Utilisation:
    loop: str
    seconds: float
    concurrency: int
    jobs: int
    repeat: int
    measured_s: float
    agent_cpu_s: float | None = None
    # The agent's makespan as its master saw it: first claim to last result (None for Celery).
    master_span_s: float | None = None

    @property
    def ideal_s(self) -> float:
        return math.ceil(self.jobs / self.concurrency) * self.seconds

    @property
    def utilisation(self) -> float:
        return self.ideal_s / self.measured_s

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ideal_s": self.ideal_s, "utilisation": self.utilisation}


def _span(jobs: Sequence[Job]) -> float:
    """First claim to last result, on the master's clock."""
    failed = [job for job in jobs if job.status is not JobStatus.COMPLETED]
    if failed:
        raise RuntimeError(f"job {failed[0].id} {failed[0].status.value}: {failed[0].error}")
    first = min(job.started_at.timestamp() for job in jobs if job.started_at is not None)
    last = max(job.completed_at.timestamp() for job in jobs if job.completed_at is not None)
    return last - first


@attrs.define
class DispatchBench:
    args: argparse.Namespace
    work: Path
    nursery: trio.Nursery
    procs: Processes
    stubs: dict[float, Path] = attrs.field(factory=dict)
    _runs: int = 0

    def stub(self, seconds: float) -> Path:
        if seconds not in self.stubs:
            self.stubs[seconds] = write_stub(self.work, seconds)
        return self.stubs[seconds]

    async def _master(self, push: bool = True, long_poll: bool = True) -> tuple[BenchMaster, trio.CancelScope]:
        """A fresh master, so each run's queue holds only its own jobs."""
        self._runs += 1
        scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[BenchMaster] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await serve_bench_master(self.work / f"master-{self._runs}.db", push=push, long_poll=long_poll,
                                         task_status=task_status)

        return await self.nursery.start(serve), scope

    def _agent_dir(self) -> Path:
        """A fresh work dir holding the one input clip the jobs name, so no run generates it."""
        directory = self.work / f"agent-{self._runs}"
        spec = build_spec(Job.from_json({"id": "clip", "status": "pending", **REQUEST.to_json()}))
        assert spec.duration is not None, "jobs on a generated input always have a duration"
        clip = InputCache(directory / "inputs").path_for(spec.width, spec.height, spec.fps, spec.duration)
        clip.parent.mkdir(parents=True, exist_ok=True)
        clip.write_bytes(b"stub input")
        return directory

    async def _agent(self, side: str, name: str, master_url: str, work: Path, *flags: str) -> BenchAgent:
        """This checkout's agent (with ``--prefetch`` when given), or the ``--before`` checkout's."""
        if side == BEFORE:
            return await start_bench_agent(self.procs, name, master_url, work, *flags, checkout=self.args.before)
        prefetch = () if self.args.prefetch is None else ("--prefetch", str(self.args.prefetch))
        return await start_bench_agent(self.procs, name, master_url, work, *flags, *prefetch)

    async def agent_utilisation(self, side: str, seconds: float, concurrency: int, repeat: int) -> Utilisation:
        jobs = concurrency * rounds(seconds, self.args.seconds)
        master, scope = await self._master()
        try:
            async with MasterClient(master.url) as client:
                ids = [(await client.submit_job(REQUEST)).id for _ in range(jobs)]
                work = self._agent_dir()
                agent = await self._agent(
                    side, f"{side}-{seconds:g}s-x{concurrency}-{repeat}", master.url, work,
                    "--max-concurrent-jobs", str(concurrency), "--ffmpeg", str(self.stub(seconds)),
                    "--poll-interval", self.args.poll_interval,
                )
                try:
                    before = agent.cpu()
                    done = await wait_until_final(client, ids, timeout=60 + 10 * jobs * seconds)
                    used = agent.cpu() - before
                finally:
                    await agent.stop()
        finally:
            scope.cancel()
        marks = [job_marks(work / "outputs", job_id) for job_id in ids]
        return Utilisation(side, seconds, concurrency, jobs, repeat, stub_span(marks), used.agent_s, _span(done))

    async def celery_utilisation(self, peer: CeleryPeer, seconds: float, concurrency: int, repeat: int) -> Utilisation:
        """The same jobs through the Celery worker: queued first, then the worker starts."""
        jobs = concurrency * rounds(seconds, self.args.seconds)

        def run() -> float:
            peer.flush()
            markers = [peer.marker() for _ in range(jobs)]
            results = [peer.submit(seconds, marker) for marker in markers]
            peer.start_worker(concurrency)
            try:
                for result in results:
                    result.get(timeout=60 + 10 * jobs * seconds)
            finally:
                peer.stop_worker()
            return stub_span([stub_marks(marker) for marker in markers])

        span: float = await trio.to_thread.run_sync(run)
        return Utilisation(CELERY, seconds, concurrency, jobs, repeat, span)

    async def celery_latency(self, peer: CeleryPeer) -> dict[str, Any]:
        """Submit-to-start latencies of tasks sent one at a time to an idle, warmed-up Celery worker."""
        poll_interval = parse_duration(self.args.poll_interval)

        def one() -> float:
            marker = peer.marker()
            submitted = time.time()
            peer.submit(LATENCY_JOB_S, marker).get(timeout=30)
            return stub_marks(marker)[0] - submitted

        latencies: list[float] = []
        await trio.to_thread.run_sync(peer.flush)
        await trio.to_thread.run_sync(peer.start_worker, 4)
        try:
            await trio.to_thread.run_sync(one)  # the first task of a fresh child pays for its imports
            for _ in range(self.args.latency_samples):
                await trio.sleep(random.uniform(0, poll_interval))
                latencies.append(await trio.to_thread.run_sync(one))
        finally:
            await trio.to_thread.run_sync(peer.stop_worker)
        return _latency_entry(CELERY, latencies)

    async def go_utilisation(self, seconds: float) -> Utilisation:
        concurrency, jobs = self.args.go_concurrency, self.args.go_jobs
        master, scope = await self._master()
        outputs = self.work / f"go-{self._runs}"
        outputs.mkdir()
        stub = self.stub(seconds)

        async def encode(job: Job) -> None:
            await trio.run_process([str(stub), "-progress", "pipe:1", str(outputs / job.id)],
                                   stdin=subprocess.DEVNULL, capture_stdout=True)

        try:
            async with MasterClient(master.url) as client, trio.open_nursery() as loop_nursery:
                ids = [(await client.submit_job(REQUEST)).id for _ in range(jobs)]
                # A name of its own per run: the model's earlier runs never heartbeat, yet look live.
                registered = await client.register(NodeRegistration(address=f"go-loop-model-{secrets.token_hex(4)}"))
                loop = GoLoop(client, registered.node.id, concurrency, parse_duration(self.args.go_poll_interval), encode)
                loop_nursery.start_soon(loop.run, loop_nursery)
                done = await wait_for_jobs(client, ids, timeout=60 + jobs * (seconds + loop.poll_interval) * 2)
                loop_nursery.cancel_scope.cancel()
        finally:
            scope.cancel()
        span = stub_span([stub_marks(outputs / job.id) for job in done])
        return Utilisation("Go loop model", seconds, concurrency, jobs, 0, span, master_span_s=_span(done))

    async def latency(self, side: str, mode: str, push: bool, long_poll: bool) -> dict[str, Any]:
        """Submit-to-start latencies of jobs sent one at a time to an idle agent."""
        master, scope = await self._master(push=push, long_poll=long_poll)
        work = self._agent_dir()
        poll_interval = parse_duration(self.args.poll_interval)
        latencies: list[float] = []
        name = mode if side == AGENT else f"{mode} ({side})"
        try:
            async with MasterClient(master.url) as client:
                agent = await self._agent(
                    side, f"latency-{mode}-{side}", master.url, work, "--max-concurrent-jobs", "4",
                    "--ffmpeg", str(self.stub(LATENCY_JOB_S)), "--poll-interval", self.args.poll_interval,
                )
                try:
                    await agent.polling()
                    missing = await _mode_missing(master, push, long_poll)
                    if missing:
                        return {"mode": name, "available": False, "reason": missing}
                    host, _, port = master.url.removeprefix("http://").rpartition(":")
                    submitter = KeptAlive(host, int(port))
                    submit = submitter.prepared("POST", "/jobs", "", json.dumps(REQUEST.to_json()).encode())
                    for _ in range(self.args.latency_samples):
                        await trio.sleep(random.uniform(0, poll_interval))
                        await submitter.connect()  # untimed, as Celery's connection to Redis is open already
                        submitted = time.time()
                        status, body = await submitter.send(submit)
                        if status != 201:
                            raise SystemExit(f"POST /jobs answered {status}: {body[:200]!r}")
                        job_id = json.loads(body)["id"]
                        # Asked only once the stub is done: a request of ours must not compete with the dispatch
                        # being measured (Celery's get() waits on a Redis subscription, costing nothing meanwhile).
                        await trio.sleep(LATENCY_JOB_S)
                        await wait_for_jobs(client, [job_id], timeout=30 + 2 * poll_interval)
                        latencies.append(job_marks(work / "outputs", job_id)[0] - submitted)
                    await submitter.aclose()
                finally:
                    await agent.stop()
        finally:
            scope.cancel()
        return _latency_entry(name, latencies)


def _latency_entry(name: str, latencies: list[float]) -> dict[str, Any]:
    return {
        "mode": name, "available": True, "samples_s": latencies, "p50_s": median(latencies),
        "p95_s": percentile(latencies, 95), "max_s": max(latencies),
    }



async def _mode_missing(master: BenchMaster, push: bool, long_poll: bool) -> str:
    """Why the agent does not use the mode the master offers, or "" when it does."""
    with trio.move_on_after(MODE_SHOWN_WITHIN_S):
        while True:
            if push and master.hub.connected:
                return ""
            if not push and long_poll and master.gate.long_polls_seen:
                return ""
            if not push and not long_poll:
                return ""
            await trio.sleep(0.05)
    if push:
        return "the agent opened no event channel"
    return "the agent sent no long-poll"


def rounds(seconds: float, target_s: float) -> int:
    """Jobs per slot: enough for about ``target_s`` of ideal makespan, at least two."""
    return max(2, round(target_s / seconds))


def sides(args: argparse.Namespace) -> list[str]:
    """The dispatchers measured: this agent, the ``--before`` checkout's, Celery."""
    return [AGENT] + ([BEFORE] if args.before else []) + ([CELERY] if args.peer == "celery" else [])


def turns(items: Sequence[Any], index: int) -> list[Any]:
    """``items`` rotated by ``index``: each side goes first in turn, so none always runs on a cooler machine."""
    shift = index % len(items)
    return [*items[shift:], *items[:shift]]


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        peer = stack.enter_context(open_celery_peer()) if args.peer == "celery" else None
        return await _measure(args, work, peer)


async def _measure(args: argparse.Namespace, work: Path, peer: CeleryPeer | None) -> dict[str, Any]:
    runs: list[Utilisation] = []
    latencies: list[dict[str, Any]] = []
    measured = sides(args)
    async with trio.open_nursery() as nursery:
        procs = Processes(nursery)
        bench = DispatchBench(args, work, nursery, procs)
        try:
            turn = 0
            for repeat in range(args.repeats):
                # Alternate the order, so drift of a shared machine spreads over all cells.
                for seconds, concurrency in args.cells if repeat % 2 == 0 else reversed(args.cells):
                    turn += 1
                    for side in turns(measured, turn):
                        if side == CELERY:
                            assert peer is not None
                            run = await bench.celery_utilisation(peer, seconds, concurrency, repeat)
                        else:
                            run = await bench.agent_utilisation(side, seconds, concurrency, repeat)
                        runs.append(run)
                        cpu = "" if run.agent_cpu_s is None else f", {1000 * run.agent_cpu_s / run.jobs:.1f} ms CPU per job"
                        say(f"repeat {repeat + 1} {side} D={seconds:g}s x{concurrency}: "
                             f"{run.jobs} jobs, utilisation {run.utilisation:.3f}{cpu}")
            if args.go_jobs:
                for seconds in sorted({seconds for seconds, _ in args.cells}):
                    run = await bench.go_utilisation(seconds)
                    runs.append(run)
                    say(f"Go loop model D={seconds:g}s x{run.concurrency}: utilisation {run.utilisation:.3f}")
            latency_runs: list[tuple[str, str, bool, bool]] = [
                (side, mode, push, long_poll) for mode, push, long_poll in MODES if mode in args.modes
                for side in measured if side != CELERY
            ]
            if peer is not None:
                latency_runs.insert(len(latency_runs) // 2, (CELERY, "", False, False))
            for side, mode, push, long_poll in latency_runs:
                if side == CELERY:
                    assert peer is not None
                    result = await bench.celery_latency(peer)
                else:
                    result = await bench.latency(side, mode, push, long_poll)
                latencies.append(result)
                say(f"latency {result['mode']}: " + (
                    f"p50 {1000 * result['p50_s']:.1f} ms, p95 {1000 * result['p95_s']:.1f} ms"
                    if result["available"] else result["reason"]))
        finally:
            await procs.stop_all()
        nursery.cancel_scope.cancel()
    return {"utilisation_runs": [run.to_json() for run in runs], "latency": latencies}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    cells: dict[tuple[str, float, int], list[dict[str, Any]]] = {}
    for run in results["utilisation_runs"]:
        cells.setdefault((run["loop"], run["seconds"], run["concurrency"]), []).append(run)
    rows = []
    for (loop, seconds, concurrency), runs in cells.items():
        cpu = [run["agent_cpu_s"] / run["jobs"] for run in runs if run["agent_cpu_s"] is not None]
        master_spans = [run["master_span_s"] for run in runs if run.get("master_span_s") is not None]
        rows.append({
            "loop": loop, "seconds": seconds, "concurrency": concurrency, "jobs": runs[0]["jobs"],
            "ideal_s": runs[0]["ideal_s"], "measured_s": median([run["measured_s"] for run in runs]),
            "utilisation": median([run["utilisation"] for run in runs]),
            "agent_cpu_s_per_job": median(cpu),
            "master_span_s": median(master_spans),
            "master_utilisation": median([runs[0]["ideal_s"] / span for span in master_spans]),
        })
    order = {AGENT: 0, BEFORE: 1, CELERY: 2}
    rows.sort(key=lambda row: (row["seconds"], row["concurrency"], order.get(row["loop"], 3)))
    bars = {}
    for (seconds, concurrency), bar in BAR_UTILISATION.items():
        row = next((r for r in rows if r["loop"] == "agent" and (r["seconds"], r["concurrency"]) == (seconds, concurrency)), None)
        if row is not None:
            bars[f"utilisation D={seconds:g}s x{concurrency}"] = goal(
                row["utilisation"], bar,
                f"Busy share of {concurrency} slots running {seconds:g} s jobs: the ideal makespan over the "
                "measured one, first stub start to last stub end; 1.0 means no slot ever waits for its next job.",
            )
    bars.update(_celery_bars(rows, results["latency"]))
    return {"utilisation": rows, "latency": results["latency"], "bars": bars}


def _celery_bars(rows: list[dict[str, Any]], latency: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent against Celery, each cell and each dispatch mode measured in the same run."""
    bars: dict[str, Any] = {}
    cells = {(row["loop"], row["seconds"], row["concurrency"]): row for row in rows}
    for (loop, seconds, concurrency), celery in cells.items():
        agent = cells.get((AGENT, seconds, concurrency))
        if loop != CELERY or agent is None:
            continue
        bars[f"agent/Celery utilisation D={seconds:g}s x{concurrency}"] = goal(
            agent["utilisation"] / celery["utilisation"], BAR_VS_CELERY_UTILISATION,
            f"The agent's slot utilisation over Celery's ({agent['utilisation']:.3f} / {celery['utilisation']:.3f}), "
            "same cell, same stub process, interleaved runs: 1.0 or more is at or above Celery.",
        )
    by_mode = {entry["mode"]: entry for entry in latency if entry["available"]}
    celery_entry = by_mode.get(CELERY)
    if celery_entry is not None:
        for mode in ("push", "long-poll"):
            if mode in by_mode:
                bars[f"agent/Celery dispatch p50 ({mode})"] = goal(
                    by_mode[mode]["p50_s"] / celery_entry["p50_s"], BAR_VS_CELERY_LATENCY,
                    f"POST /jobs to encoder start on an idle agent ({1000 * by_mode[mode]['p50_s']:.1f} ms) over "
                    f"Celery's apply_async to stub start ({1000 * celery_entry['p50_s']:.1f} ms), p50.",
                    at_most=True,
                )
    return bars


def versus_celery(summary: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """Each agent side's figure over Celery's, per cell and dispatch mode; empty without ``--peer celery``."""
    cells = {(row["loop"], row["seconds"], row["concurrency"]): row["utilisation"] for row in summary["utilisation"]}
    ratios: list[tuple[str, dict[str, float]]] = []
    for (loop, seconds, concurrency), celery in cells.items():
        if loop == CELERY:
            ratios.append((f"utilisation D={seconds:g}s x{concurrency}", {
                side: cells[side, seconds, concurrency] / celery
                for side in (AGENT, BEFORE) if (side, seconds, concurrency) in cells
            }))
    p50 = {entry["mode"]: entry["p50_s"] for entry in summary["latency"] if entry["available"]}
    if CELERY in p50:
        for mode in ("push", "long-poll", "polling"):
            sides = {AGENT: mode, BEFORE: f"{mode} ({BEFORE})"}
            found = {side: p50[name] / p50[CELERY] for side, name in sides.items() if name in p50}
            if found:
                ratios.append((f"dispatch p50, {mode}", found))
    return ratios


def utilisation_rows(summary: dict[str, Any]) -> list[list[Any]]:
    return [
        [row["loop"], row["seconds"], row["concurrency"], row["jobs"], row["ideal_s"], row["measured_s"],
         row["utilisation"], 1000 * row["agent_cpu_s_per_job"], row["master_span_s"], row["master_utilisation"]]
        for row in summary["utilisation"]
    ]


def markdown(summary: dict[str, Any], settings: dict[str, Any], host: dict[str, Any]) -> str:
    latency_rows = [
        [entry["mode"], len(entry["samples_s"]), 1000 * entry["p50_s"], 1000 * entry["p95_s"], 1000 * entry["max_s"]]
        if entry["available"] else [entry["mode"], 0, "-", "-", entry["reason"]]
        for entry in summary["latency"]
    ]
    lines = [
        f"# Dispatch: a stub encoder that sleeps D s; utilisation is the median of {settings['repeats']} repeats",
        "",
        f"{host['cores']} cores ({host['cpu_model']}), Python {host['python']}; agent --poll-interval "
        f"{settings['poll_interval']}, --prefetch {_shown(settings.get('prefetch'))}, "
        f"Go loop model polls every {settings['go_poll_interval']}.",
        *([f"\"agent before\" is the agent of {settings['before']} (the same master)."] if settings.get("before") else []),
        *(["Celery: 5.x prefork worker, -c = jobs at once, prefetch multiplier 1, -O fair, Redis broker and "
           "backend; its task runs the same kind of stub, which writes the same marks."]
          if settings.get("peer") == "celery" else []),
        f"Command: `{host['command']}`",
        "",
        "## Slot utilisation (ideal makespan / measured)",
        "",
        "Measured: first stub start to last stub end, from the marks each stub writes, alike on every side. "
        "Claim to result: the agent's makespan as its master saw it, first claim to last result recorded, "
        "which adds a claim's and a result's round trip.",
        "",
        markdown_table(UTILISATION_COLUMNS, utilisation_rows(summary)),
        "",
        "## Dispatch latency, POST /jobs to encoder start, idle agent",
        "",
        markdown_table(LATENCY_COLUMNS, latency_rows),
        "",
    ]
    ratios = versus_celery(summary)
    if ratios:
        lines += ["## Against Celery, same run (utilisation: side / Celery; dispatch p50: side / Celery)", "",
                  markdown_table(("measure", *[side for side in (AGENT, BEFORE) if side in ratios[0][1]]),
                                 [[name, *values.values()] for name, values in ratios]), ""]
    lines += [GOALS_NOTE, ""]
    lines += [goal_line(name, result) for name, result in summary["bars"].items()]
    return "\n".join(lines)


def _shown(prefetch: int | None) -> str:
    return "(the agent's default)" if prefetch is None else str(prefetch)


def _cells(text: str) -> list[tuple[float, int]]:
    """``0.2x4,1x4``: (D seconds, jobs at once) pairs."""
    cells = []
    for part in filter(None, (part.strip() for part in text.split(","))):
        seconds, _, concurrency = part.partition("x")
        try:
            cell = (float(seconds), int(concurrency))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: a cell is DxC, such as 0.2x4") from None
        if cell[0] <= 0 or cell[1] < 1:
            raise argparse.ArgumentTypeError(f"{part!r}: D must be positive and C at least 1")
        cells.append(cell)
    if not cells:
        raise argparse.ArgumentTypeError(f"{text!r}: give cells such as 0.2x4,1x4")
    return cells


def _floats(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive numbers separated by commas")
    return values


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers of 1 or more separated by commas")
    return values


def _modes(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = [mode for mode, _, _ in MODES]
    if not set(names) <= set(known):
        raise argparse.ArgumentTypeError(f"{text!r}: modes are {', '.join(known)}")
    return names


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__.split("\n")[0])
    parser.add_argument("--durations", type=_floats, default=[0.2, 1.0, 5.0],
                        help="stub encode seconds D (default 0.2,1,5)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 4, 16], help="concurrency levels (default 1,4,16)")
    parser.add_argument("--cells", type=_cells,
                        help="DxC cells to run instead of every duration at every level, such as 0.2x4,1x4,0.2x16")
    parser.add_argument("--peer", choices=["celery"],
                        help="also run a Celery worker (Redis, prefork, prefetch 1, -O fair) on the same cells")
    parser.add_argument("--before", type=checkout_path,
                        help="also run the agent of this other checkout (git worktree add PATH COMMIT), side by side")
    parser.add_argument("--prefetch", type=int,
                        help="this checkout's agent's --prefetch (default: the agent's own default)")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="ideal makespan a utilisation run aims at; at least 2 jobs per slot (default 6, "
                        "long enough that the agent's cold start is a small part of it)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the utilisation runs (default 3)")
    parser.add_argument("--modes", type=_modes, default=[mode for mode, _, _ in MODES],
                        help="dispatch modes for latency (default push,long-poll,polling)")
    parser.add_argument("--latency-samples", type=int, default=20, help="jobs per latency mode (default 20)")
    parser.add_argument("--poll-interval", type=duration_flag, default="2s",
                        help="the agent's --poll-interval (default 2s)")
    parser.add_argument("--go-poll-interval", type=duration_flag, default="2s",
                        help="poll tick of the Go loop model (default 2s; the Go agent's default was 10s)")
    parser.add_argument("--go-concurrency", type=int, default=4, help="slots of the Go loop model (default 4)")
    parser.add_argument("--go-jobs", type=int, default=8, help="jobs per Go loop model run (default 8; 0 skips it)")
    add_output_flags(parser, "dispatch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cells is None:
        args.cells = [(seconds, concurrency) for seconds in args.durations for concurrency in args.concurrency]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with work_directory(prefix="ffrtmp-dispatch-") as work:
        try:
            results = trio.run(measure, args, work)
        except CeleryUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    summary = summarise(results)
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "check")}
    host = machine()
    text = markdown(summary, settings, host)
    out = fresh_out_dir(args.name, args.out)
    write_outputs(out, args.name, {"machine": host, "settings": settings, "summary": summary, **results},
                  UTILISATION_COLUMNS, utilisation_rows(summary), text)
    print(text)
    print(f"wrote {out}/{args.name}.{{json,csv,md}}", file=sys.stderr)
    return goals_exit_code(summary["bars"], check=args.check)


if __name__ == "__main__":
    sys.exit(main())
