"""Bandwidth against concurrency: the agent beside a plain process pool running the same FFmpeg commands.

Usage (from the repository root; needs the ``[bench]`` extra, ``pip install '.[bench]'``)::

    python -m bench.bandwidth_scaling --levels 1,2,4,8 --jobs 8 --duration 3 --repeats 3
    python bench/bandwidth_scaling.py --help

For each concurrency level the same jobs run twice: through the real master
and a real agent process (``--max-concurrent-jobs N``), and as the very same
FFmpeg command lines through a bounded process pool with no agent at all,
which is the physical limit of the machine. With ``--adaptive`` (the default)
one more agent run starts at ``--max-concurrent-jobs auto --adaptive``. With
``--before PATH`` the agent of another checkout (``git worktree add PATH
<commit>``) runs the same jobs too, in turn with the other two, against the
same master: before and after figures from one run.

Runs are interleaved so that drift of a shared machine favours neither side:
each repeat walks the levels in the opposite order to the one before, and the
agent and the pool swap turns from level to level. Every figure reported is
the median over the repeats; the agent/pool ratio is the median of the ratios
of runs made side by side.

Per level: makespan (submit to last result for the agent, first start to last
exit for the pool), aggregate bandwidth (as a result's ``bandwidth_mbps``:
input plus output bytes, in Mbit/s of 2**20 bits, over the makespan), encoded
frames per second, the encoders' CPU use as a share of all cores, speed-up
and efficiency against the lowest level, and the agent's own CPU time as a
share of its encoders'.
Writes ``<name>.json``, ``.csv``, ``.md`` and ``.png`` into ``--out``, by
default a new ``bench-results/<name>-<date>-<time>/``. Each goal line says
what it measures; a missed goal exits 1 only with ``--check``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
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
from agent.models import Job, JobRequest, JobStatus
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.engines.ffmpeg import encode_argv, find_ffmpeg
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import bandwidth_mbps
from agent.worker.processes import child_env
from agent.worker.progress import ProgressParser
from bench._farm import (
    BenchMaster,
    checkout_path,
    duration_flag,
    levels_flag,
    serve_bench_master,
    start_bench_agent,
    wait_until_final,
)
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
    save_figure,
    work_directory,
    write_outputs,
)
from tests.support import Processes

log = logging.getLogger("bench.bandwidth_scaling")

AGENT, POOL, ADAPTIVE, BEFORE = "agent", "pool", "adaptive", "agent before"
# The agent is woken by no one but its own polls when the master has no push
# channel for it: poll often, so idle time does not count against it.
DEFAULT_POLL_INTERVAL = "0.2s"
# The bench's jobs last seconds, so --adaptive must decide in seconds too.
DEFAULT_ADAPTIVE_INTERVAL = "2s"
# What the bars ask of the agent.
BAR_RATIO_AT_CORES = 0.98
BAR_RATIO_ONE_AT_A_TIME = 0.98
BAR_AGENT_CPU_SHARE = 0.02
BAR_ADAPTIVE_VS_BEST = 0.90

COLUMNS = (
    "jobs at once", "agent makespan s", "pool makespan s", "agent Mbps", "pool Mbps",
    "agent fps", "pool fps", "agent encoder CPU %", "pool encoder CPU %",
    "agent speed-up", "pool speed-up", "agent efficiency", "pool efficiency",
    "agent/pool throughput", "agent CPU % of encoders", "before/pool throughput",
)


class BenchFailed(RuntimeError):
    """A job failed or an encode exited non-zero: the figures would mean nothing."""


@attrs.frozen
class Workload:
    scenario: str
    jobs: int
    duration: float
    # Real-time jobs read their input at its native rate (-re), as live streams do:
    # each uses a slice of a core, so bandwidth grows with the jobs until the CPU is full.
    realtime: bool = False

    def request(self) -> JobRequest:
        parameters = {"duration": self.duration, "realtime": self.realtime}
        return JobRequest.from_json({"scenario": self.scenario, "parameters": parameters})

    def spec(self, job_id: str) -> EncodeSpec:
        """What the agent builds for such a job: the pool runs the argv built from the same spec."""
        request = self.request()
        job = Job.from_json({
            "id": job_id, "scenario": request.scenario, "parameters": request.parameters, "status": "pending",
        })
        return build_spec(job)


@attrs.frozen
class Run:
    """One pass of all the jobs at one level, by one side."""

    side: str
    level: int
    repeat: int
    makespan_s: float
    input_bytes: int
    output_bytes: int
    frames: int
    encoder_cpu_s: float
    agent_cpu_s: float | None = None
    limit_changes: tuple[str, ...] = ()

    @property
    def bandwidth_mbps(self) -> float:
        return bandwidth_mbps(self.input_bytes, self.output_bytes, self.makespan_s)

    @property
    def fps(self) -> float:
        return self.frames / self.makespan_s

    def encoder_cpu_share(self, cores: int) -> float:
        """The encoders' CPU time over all the cores' time during the makespan."""
        return self.encoder_cpu_s / (self.makespan_s * cores)

    @property
    def agent_cpu_share(self) -> float | None:
        """The agent's own CPU time over its encoders' CPU time."""
        return None if self.agent_cpu_s is None else self.agent_cpu_s / self.encoder_cpu_s

    def to_json(self, cores: int) -> dict[str, Any]:
        return {
            **attrs.asdict(self), "bandwidth_mbps": self.bandwidth_mbps, "fps": self.fps,
            "encoder_cpu_share": self.encoder_cpu_share(cores), "agent_cpu_share": self.agent_cpu_share,
        }


def plan(levels: Sequence[int], repeats: int, adaptive: bool, before: bool = False) -> list[tuple[int, str, int]]:
    """``(repeat, side, level)`` in run order: levels reversed every other repeat, sides taking turns first.

    The adaptive run, which has no level of its own, goes last in one repeat
    and first in the next.
    """
    order: list[tuple[int, str, int]] = []
    compared = (AGENT, POOL, BEFORE) if before else (AGENT, POOL)
    for repeat in range(repeats):
        walk = list(levels) if repeat % 2 == 0 else list(reversed(levels))
        runs = []
        for index, level in enumerate(walk):
            shift = (repeat + index) % len(compared)
            runs += [(repeat, side, level) for side in (*compared[shift:], *compared[:shift])]
        if adaptive:
            runs = runs + [(repeat, ADAPTIVE, 0)] if repeat % 2 == 0 else [(repeat, ADAPTIVE, 0), *runs]
        order += runs
    return order


@attrs.define
class Bench:
    """Everything the runs share: the master, the agent's work dir, the pool's command lines."""

    args: argparse.Namespace
    workload: Workload
    master: BenchMaster
    client: MasterClient
    procs: Processes
    agent_dir: Path
    pool_argvs: list[tuple[list[str], Path]]
    input_bytes: int

    async def run_agent(self, side: str, level: int, repeat: int) -> Run:
        concurrency = ["--max-concurrent-jobs", str(level)]
        if side == ADAPTIVE:
            concurrency = ["--max-concurrent-jobs", "auto", "--adaptive",
                           "--adaptive-interval", self.args.adaptive_interval]
        agent = await start_bench_agent(
            self.procs, f"{side}-{level}-{repeat}", self.master.url, self.agent_dir,
            *concurrency, "--poll-interval", self.args.poll_interval, checkout=self.args.before if side == BEFORE else None,
        )
        try:
            await agent.polling()
            before = agent.cpu()
            submitted = time.time()
            ids = [(await self.client.submit_job(self.workload.request())).id for _ in range(self.workload.jobs)]
            try:
                jobs = await wait_until_final(self.client, ids, timeout=self._timeout())
            except trio.TooSlowError:
                raise BenchFailed(f"jobs not final in {self._timeout():g}s; the agent's log:\n{agent.process.log}") from None
            used = agent.cpu() - before
        finally:
            await agent.stop()
        shutil.rmtree(self.agent_dir / "outputs", ignore_errors=True)
        failed = [job for job in jobs if job.status is not JobStatus.COMPLETED]
        if failed:
            raise BenchFailed(f"job {failed[0].id} {failed[0].status.value}: {failed[0].error}\n{agent.process.log}")
        finished = max(job.completed_at.timestamp() for job in jobs if job.completed_at is not None)
        return Run(
            side=side, level=level, repeat=repeat, makespan_s=finished - submitted,
            input_bytes=sum(job.metrics.get("input_file_bytes", 0) for job in jobs),
            output_bytes=sum(job.metrics.get("output_file_bytes", 0) for job in jobs),
            frames=sum(job.metrics.get("frames", 0) for job in jobs),
            encoder_cpu_s=used.encoders_s, agent_cpu_s=used.agent_s,
            limit_changes=tuple(agent.limit_changes()),
        )

    async def run_pool(self, level: int, repeat: int) -> Run:
        limiter = trio.CapacityLimiter(level)
        frames: list[int] = []

        async def encode(argv: list[str], output: Path) -> None:
            async with limiter:
                result = await trio.run_process(
                    argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
                    cwd=output.parent, env=child_env(),
                )
            if result.returncode != 0:
                raise BenchFailed(f"ffmpeg exited {result.returncode}: {result.stderr.decode()[-2000:]}")
            parser = ProgressParser()
            parser.feed(result.stdout)
            frames.append(parser.latest.frame if parser.latest is not None else 0)

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for argv, output in self.pool_argvs:
                nursery.start_soon(encode, argv, output)
        makespan = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return Run(
            side=POOL, level=level, repeat=repeat, makespan_s=makespan,
            input_bytes=self.input_bytes * len(self.pool_argvs),
            output_bytes=sum(output.stat().st_size for _, output in self.pool_argvs),
            frames=sum(frames),
            encoder_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        )

    def _timeout(self) -> float:
        return 60.0 + 10 * self.workload.jobs * self.workload.duration


async def measure(args: argparse.Namespace, work: Path) -> list[Run]:
    ffmpeg = find_ffmpeg()
    workload = Workload(args.scenario, args.jobs, args.duration, args.realtime)
    spec = workload.spec("warm-up")
    assert spec.duration is not None, "jobs on a generated input always have a duration"
    agent_dir = work / "agent"
    # The agent finds this clip in its cache, so no run pays for generating it.
    clip = await InputCache(agent_dir / "inputs").get(ffmpeg, spec.width, spec.height, spec.fps, spec.duration)
    pool_dir = work / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    pool_argvs = []
    for index in range(workload.jobs):
        output = pool_dir / f"job-{index}.{spec.extension}"
        pool_argvs.append((encode_argv(ffmpeg, workload.spec(f"pool-{index}"), str(clip), str(output)), output))
    order = plan(args.levels, args.repeats, args.adaptive, before=args.before is not None)
    runs: list[Run] = []
    async with trio.open_nursery() as nursery:
        master = await nursery.start(serve_bench_master, work / "master.db")
        procs = Processes(nursery)
        try:
            async with MasterClient(master.url) as client:
                bench = Bench(args, workload, master, client, procs, agent_dir, pool_argvs, clip.stat().st_size)
                for number, (repeat, side, level) in enumerate(order, 1):
                    if side == POOL:
                        run = await bench.run_pool(level, repeat)
                    else:
                        run = await bench.run_agent(side, level, repeat)
                    runs.append(run)
                    print(
                        f"[{number}/{len(order)}] repeat {repeat + 1} {side} x{level or 'auto'}: "
                        f"{run.makespan_s:.2f}s, {run.bandwidth_mbps:.1f} Mbps"
                        + (f", limits {' '.join(run.limit_changes) or 'unchanged'}" if side == ADAPTIVE else ""),
                        file=sys.stderr, flush=True,
                    )
        finally:
            await procs.stop_all()
        nursery.cancel_scope.cancel()
    return runs


def _median_of(runs: Sequence[Run], value: Any) -> float:
    return median([value(run) for run in runs])


def summarise(runs: Sequence[Run], levels: Sequence[int], cores: int) -> dict[str, Any]:
    """Medians per level and side, speed-ups against the lowest level, and the bars."""
    def of(side: str, level: int) -> list[Run]:
        return [run for run in runs if run.side == side and run.level == level]

    base = min(levels)
    base_makespan = {side: _median_of(of(side, base), lambda r: r.makespan_s) for side in (AGENT, POOL)}
    rows = []
    for level in levels:
        row: dict[str, Any] = {"level": level}
        for side in (AGENT, POOL):
            mine = of(side, level)
            makespan = _median_of(mine, lambda r: r.makespan_s)
            speedup = base_makespan[side] / makespan
            row[side] = {
                "makespan_s": makespan,
                "bandwidth_mbps": _median_of(mine, lambda r: r.bandwidth_mbps),
                "fps": _median_of(mine, lambda r: r.fps),
                "encoder_cpu_share": _median_of(mine, lambda r: r.encoder_cpu_share(cores)),
                "speedup": speedup,
                "efficiency": speedup / (level / base),
            }
        pairs = {run.repeat: run for run in of(POOL, level)}
        for side, key in ((AGENT, "throughput_ratio"), (BEFORE, "before_throughput_ratio")):
            row[key] = median(
                [run.bandwidth_mbps / pairs[run.repeat].bandwidth_mbps for run in of(side, level) if run.repeat in pairs]
            )
        row["agent_cpu_share"] = _median_of(of(AGENT, level), lambda r: r.agent_cpu_share)
        rows.append(row)
    adaptive = [run for run in runs if run.side == ADAPTIVE]
    summary: dict[str, Any] = {"levels": rows}
    if adaptive:
        summary["adaptive"] = {
            "makespan_s": _median_of(adaptive, lambda r: r.makespan_s),
            "bandwidth_mbps": _median_of(adaptive, lambda r: r.bandwidth_mbps),
            "fps": _median_of(adaptive, lambda r: r.fps),
            "encoder_cpu_share": _median_of(adaptive, lambda r: r.encoder_cpu_share(cores)),
            "agent_cpu_share": _median_of(adaptive, lambda r: r.agent_cpu_share),
            "limit_changes": [list(run.limit_changes) for run in adaptive],
        }
    summary["bars"] = _bars(summary, cores)
    return summary


def _bars(summary: dict[str, Any], cores: int) -> dict[str, Any]:
    rows = summary["levels"]
    bars: dict[str, Any] = {}
    at_cores = [row for row in rows if row["level"] == cores]
    one = [row for row in rows if row["level"] == 1]
    if one:
        bars["throughput_ratio_one_at_a_time"] = goal(
            one[0]["throughput_ratio"], BAR_RATIO_ONE_AT_A_TIME,
            "The agent's bandwidth running one job at a time over the process pool's on the same commands: "
            "what claiming, starting and reporting each job costs.", level=1,
        )
    if at_cores:
        bars["throughput_ratio_at_cores"] = goal(
            at_cores[0]["throughput_ratio"], BAR_RATIO_AT_CORES,
            f"The agent's bandwidth at {cores} jobs at once (one per core) over a plain process pool running "
            "the same FFmpeg commands: 1.0 means the agent and master cost no throughput.", level=cores,
        )
    bars["agent_cpu_share_of_encoders"] = goal(
        max(row["agent_cpu_share"] for row in rows), BAR_AGENT_CPU_SHARE,
        "The agent's own CPU time as a share of its encoders' CPU time, the highest over the levels: "
        "what the agent itself costs.", at_most=True,
    )
    if "adaptive" in summary:
        best = max(rows, key=lambda row: row[AGENT]["bandwidth_mbps"])
        bars["adaptive_vs_best_fixed"] = goal(
            summary["adaptive"]["bandwidth_mbps"] / best[AGENT]["bandwidth_mbps"], BAR_ADAPTIVE_VS_BEST,
            f"Bandwidth of --max-concurrent-jobs auto --adaptive over the best fixed level ({best['level']} jobs): "
            "how close the tuner gets without being told the answer.", best_level=best["level"],
        )
    return bars


def table_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for row in summary["levels"]:
        agent, pool = row[AGENT], row[POOL]
        rows.append([
            row["level"], agent["makespan_s"], pool["makespan_s"], agent["bandwidth_mbps"], pool["bandwidth_mbps"],
            agent["fps"], pool["fps"], 100 * agent["encoder_cpu_share"], 100 * pool["encoder_cpu_share"],
            agent["speedup"], pool["speedup"], agent["efficiency"], pool["efficiency"],
            row["throughput_ratio"], 100 * row["agent_cpu_share"], row["before_throughput_ratio"],
        ])
    if "adaptive" in summary:
        adaptive, nan = summary["adaptive"], float("nan")
        rows.append([
            "auto --adaptive", adaptive["makespan_s"], nan, adaptive["bandwidth_mbps"], nan, adaptive["fps"], nan,
            100 * adaptive["encoder_cpu_share"], nan, nan, nan, nan, nan, nan, 100 * adaptive["agent_cpu_share"], nan,
        ])
    return rows


def markdown(summary: dict[str, Any], settings: dict[str, Any], host: dict[str, Any], png: str) -> str:
    lines = [
        f"# Bandwidth scaling: {settings['jobs']} x {settings['scenario']} ({settings['duration']:g} s each"
        f"{', real-time' if settings.get('realtime') else ', as fast as possible'}), "
        f"median of {settings['repeats']} interleaved repeats",
        "",
        f"{host['cores']} cores ({host['cpu_model']}), {host['ffmpeg']}, Python {host['python']}.",
        f"Command: `{host['command']}`",
        "",
        markdown_table(COLUMNS, table_rows(summary)),
        "",
        f"![bandwidth and CPU against concurrency]({png})",
        "",
    ]
    lines += [GOALS_NOTE, ""]
    lines += [goal_line(name, result) for name, result in summary["bars"].items()]
    if "adaptive" in summary:
        paths = ["; ".join(changes) or "unchanged" for changes in summary["adaptive"]["limit_changes"]]
        lines.append(f"- auto --adaptive limit changes per repeat: {' | '.join(paths)}")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Bandwidth and encoder CPU against concurrency, agent beside pool."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    levels = [row["level"] for row in summary["levels"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for side, style in ((POOL, "s--"), (AGENT, "o-")):
        label = "plain process pool (limit)" if side == POOL else "agent + master"
        left.plot(levels, [row[side]["bandwidth_mbps"] for row in summary["levels"]], style, label=label)
        right.plot(levels, [100 * row[side]["encoder_cpu_share"] for row in summary["levels"]], style, label=label)
    if "adaptive" in summary:
        left.axhline(summary["adaptive"]["bandwidth_mbps"], color="grey", linestyle=":", label="agent auto --adaptive")
    for axes, title in ((left, "aggregate bandwidth (Mbit/s)"), (right, "encoder CPU (% of all cores)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.set_xlabel("concurrent jobs")
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    save_figure(figure, path)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bandwidth_scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=levels_flag("concurrency levels of 1 or more, such as 1,2,4,8"),
                        default=[1, 2, 4, 8], help="concurrency levels (default 1,2,4,8)")
    parser.add_argument("--jobs", type=int, default=8, help="jobs per run (default 8)")
    parser.add_argument("--scenario", default="720p30-h264", help="scenario of every job (default 720p30-h264)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of video per job (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    parser.add_argument("--realtime", action="store_true",
                        help="real-time jobs (-re, as live streams): find where bandwidth stops growing with jobs")
    parser.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the agent at --max-concurrent-jobs auto --adaptive (default on)")
    parser.add_argument("--adaptive-interval", type=duration_flag, default=DEFAULT_ADAPTIVE_INTERVAL,
                        help=f"--adaptive-interval of that run (default {DEFAULT_ADAPTIVE_INTERVAL})")
    parser.add_argument("--poll-interval", type=duration_flag, default=DEFAULT_POLL_INTERVAL,
                        help=f"the agent's --poll-interval (default {DEFAULT_POLL_INTERVAL})")
    add_output_flags(parser, "bandwidth_scaling", work_dir=True)
    parser.add_argument("--before", type=checkout_path,
                        help="also run the agent of this other checkout (git worktree add PATH COMMIT), in turn")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with work_directory(args.work_dir) as work:
        runs = trio.run(measure, args, work)
    cores = os.cpu_count() or 1
    summary = summarise(runs, args.levels, cores)
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "work_dir", "check")}
    host = machine()
    out = fresh_out_dir(args.name, args.out)
    png = out / f"{args.name}.png"
    text = markdown(summary, settings, host, png.name)
    write_outputs(out, args.name, {
        "machine": host, "settings": settings, "summary": summary, "runs": [run.to_json(cores) for run in runs],
    }, COLUMNS, table_rows(summary), text)
    plot(summary, png)
    print(text)
    print(f"wrote {out}/{args.name}.{{json,csv,md,png}}", file=sys.stderr)
    return goals_exit_code(summary["bars"], check=args.check)


if __name__ == "__main__":
    sys.exit(main())
