"""Ladder execution modes: one FFmpeg process for all rungs, a process per rung, or a job per rung through the agent.

Usage (from the repository root; needs the ``[bench]`` extra, ``pip install '.[bench]'``)::

    python -m bench.ladder --duration 8 --repeats 3
    python -m bench.ladder --input talk.mp4 --ladder 1080p30-h264,720p30-h264@3M,480p30-h264 --package dash
    python bench/ladder.py --help

The same input and ladder (by default a 3-rung 1080p/720p/480p H.264 ladder
of a generated 1080p30 clip with audio) are encoded three ways:

``single``
    the worker's ``--ladder-mode single``: one FFmpeg process decodes the input
    once, splits the picture and feeds one encoder per rung; then the package;
``split``
    ``--ladder-mode split``: one FFmpeg process per rung, all at once, each
    decoding the input itself (the first also encodes the audio); then the package;
``jobs``
    what a farm without ladders does: one ordinary job per rung (same scenario,
    bitrate and preset, each with its own audio, an MP4 each, no package),
    submitted to a real master and run by a real agent with as many slots as jobs.

The ladder modes run the command lines the worker builds
(:func:`agent.worker.engines.ffmpeg_ladder.ladder_plan`) as plain processes,
so the figure is the mode's own cost; the package each mode writes is checked
once with the player checks (:mod:`agent.worker.package_check`) before the
figures are trusted. Each is measured with 1 ladder and with one ladder per
core at once (``--levels``). Runs are interleaved: each repeat walks the
levels in the opposite order to the one before, and the order of the modes
turns at every level. Every figure is the median over the repeats.

Per mode and level: makespan (start of the first process, or the submit, to
the end of the last), the CPU seconds of every process involved (the
encoders' and packagers' from psutil's children times; the agent's own on a
separate line), that CPU as a share of all cores over the makespan, frames
per second per rung (the rung's frames over the wall time of the process or
job that made it) and each rung's output size. Writes ``<name>.json``,
``.csv``, ``.md`` (with the exact commands) and ``.png`` into ``--out``, by
default a new ``bench-results/<name>-<date>-<time>/``. There are no goals:
the findings lines say which mode was fastest and by how much.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file too: import this checkout

import attrs
import psutil  # type: ignore[import-untyped]
import trio

from agent.client import MasterClient
from agent.ladder import Ladder, LadderMode, Rung
from agent.models import Job, JobRequest, JobStatus
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.engines.ffmpeg import TEST_SOURCE, find_ffmpeg, num, probe_media
from agent.worker.engines.ffmpeg_ladder import LadderPlan, finish_master_playlist, ladder_plan, staged_video
from agent.worker.package_check import ExpectedRung, check_package
from agent.worker.processes import child_env
from bench._farm import BenchAgent, BenchMaster, duration_flag, levels_flag, serve_bench_master, start_bench_agent
from bench._report import (
    add_output_flags,
    fresh_out_dir,
    machine,
    markdown_table,
    median,
    save_figure,
    work_directory,
    write_outputs,
)
from tests.support import Processes, wait_for_jobs

log = logging.getLogger("bench.ladder")

SINGLE: LadderMode = "single"
SPLIT: LadderMode = "split"
JOBS = "jobs"
MODES = (SINGLE, SPLIT, JOBS)
DEFAULT_LADDER = "1080p30-h264,720p30-h264,480p30-h264"
# The agent is woken by no one but its own polls when push is off: poll often, so idle time does not count.
DEFAULT_POLL_INTERVAL = "0.2s"
# The generated clip: the ladder's top rung is 1080p30, so is its source; the audio is a tone, as real inputs have sound.
SOURCE_SIZE, SOURCE_FPS = (1920, 1080), 30


class BenchFailed(RuntimeError):
    """An encode exited non-zero, a job failed or a package failed the player checks: the figures would mean nothing."""


@attrs.frozen
class Run:
    """One pass of ``ladders`` ladders at once in one mode; per-rung figures are medians over the ladders."""

    mode: str
    ladders: int
    repeat: int
    makespan_s: float
    cpu_s: float
    rung_fps: tuple[float, ...]
    rung_bytes: tuple[int, ...]
    package_bytes: int = 0
    agent_cpu_s: float | None = None
    # The machine's 1-minute load average as the run started: other work on a shared machine shows here.
    load_before: float = 0.0

    def cpu_share(self, cores: int) -> float:
        """The processes' CPU time over all the cores' time during the makespan."""
        return self.cpu_s / (self.makespan_s * cores)


def plan(levels: Sequence[int], repeats: int, modes: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(repeat, level, mode)`` in run order: levels reversed every other repeat, modes turned at every level.

    The modes' order rotates by one from one level to the next and runs
    backwards in odd repeats, so no mode always runs first, or always after
    the same other one, on a machine that drifts.
    """
    order: list[tuple[int, int, str]] = []
    step = 0
    for repeat in range(repeats):
        walk = list(levels) if repeat % 2 == 0 else list(reversed(levels))
        for level in walk:
            turn = list(modes[step % len(modes):]) + list(modes[: step % len(modes)])
            order += [(repeat, level, mode) for mode in (turn if repeat % 2 == 0 else reversed(turn))]
            step += 1
    return order


def _children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been reaped."""
    times = psutil.Process().cpu_times()
    return float(times.children_user + times.children_system)


def rung_scenario(rung: Rung) -> str:
    return rung.text.partition("@")[0]


@attrs.define
class Bench:
    """What every run shares: the input, the ladder, the master for the jobs, the work directories."""

    args: argparse.Namespace
    ffmpeg: str
    clip: Path
    duration: float
    audio: bool
    ladder: Ladder
    work: Path
    master: BenchMaster
    client: MasterClient
    procs: Processes
    checked: set[str] = attrs.field(factory=set)

    def spec(self, name: str) -> EncodeSpec:
        """The ladder job as the worker would build it from ``--param ladder=... --param package=...``."""
        parameters = {"ladder": self.args.ladder, "package": self.args.package, "preset": self.args.preset,
                      "input": str(self.clip), "duration": self.duration}
        job = Job(id=name, scenario=rung_scenario(self.ladder.rungs[0]), parameters=parameters)
        return build_spec(job, input_dirs=[self.clip.parent])

    def ladder_plan(self, mode: LadderMode, index: int) -> tuple[LadderPlan, Path, Path]:
        """The command lines of ladder ``index``, its staging and its package directory (both empty)."""
        stage, package = self.work / mode / f"stage-{index}", self.work / mode / f"package-{index}"
        for directory in (stage, package):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        plan = ladder_plan(self.ffmpeg, self.spec(f"{mode}-{index}"), str(self.clip), stage_dir=stage, mode=mode,
                           audio=self.audio)
        return plan, stage, package

    async def run_ladders(self, mode: LadderMode, ladders: int, repeat: int) -> Run:
        """``ladders`` ladders at once, each encoded in ``mode`` then packaged; timed and CPU-counted."""
        plans = [self.ladder_plan(mode, index) for index in range(ladders)]
        # rung index -> the wall time of the process that made it, one per ladder
        times: list[list[float]] = [[] for _ in self.ladder.rungs]

        async def one_ladder(plan: LadderPlan, stage: Path, package: Path) -> None:
            async def encode(argv: list[str], rungs: tuple[Rung, ...]) -> None:
                started = time.monotonic()
                await _run(argv, stage)
                for rung in rungs:
                    times[rung.index - 1].append(time.monotonic() - started)

            async with trio.open_nursery() as nursery:
                for argv, rungs in zip(plan.encodes, plan.encode_rungs):
                    nursery.start_soon(encode, argv, rungs)
            await _run(plan.package, package)
            if self.ladder.package == "hls":
                finish_master_playlist(package, self.ladder.rungs, self.audio)

        load = os.getloadavg()[0]
        before = _children_cpu()
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for plan, stage, package in plans:
                nursery.start_soon(one_ladder, plan, stage, package)
        makespan = time.monotonic() - started
        cpu = _children_cpu() - before
        _, stage, package = plans[0]
        await self.check_once(mode, package)
        return Run(
            mode=mode, ladders=ladders, repeat=repeat, makespan_s=makespan, cpu_s=cpu,
            rung_fps=tuple(median([self.frames(rung) / t for t in times[rung.index - 1]]) for rung in self.ladder.rungs),
            rung_bytes=tuple(staged_video(stage, rung).stat().st_size for rung in self.ladder.rungs),
            package_bytes=sum(path.stat().st_size for path in package.rglob("*") if path.is_file()),
            load_before=load,
        )

    def frames(self, rung: Rung) -> int:
        return round(self.duration * rung.fps)

    async def check_once(self, mode: str, package: Path) -> None:
        """Play the first package a mode writes as a player would; a bad one stops the bench."""
        if mode in self.checked:
            return
        rungs = [ExpectedRung(rung.text, rung.width, rung.height, rung.fps, rung.codec) for rung in self.ladder.rungs]
        problems = await check_package(package, self.ladder.package, rungs, ffmpeg=self.ffmpeg,
                                       duration=self.duration, audio=self.audio)
        if problems:
            raise BenchFailed(f"the {mode} mode's package fails the player checks: " + "; ".join(problems))
        self.checked.add(mode)

    def job_requests(self) -> list[JobRequest]:
        """One ordinary job per rung: its scenario, bitrate and the ladder's preset, on the same input."""
        return [
            JobRequest.from_json({"scenario": rung_scenario(rung), "parameters": {
                "input": str(self.clip), "duration": self.duration, "bitrate": rung.bitrate,
                "preset": self.ladder.preset,
            }})
            for rung in self.ladder.rungs
        ]

    def agent_flags(self, slots: int) -> list[str]:
        return ["--max-concurrent-jobs", str(slots), "--input-dir", str(self.clip.parent),
                "--poll-interval", self.args.poll_interval]

    async def run_jobs(self, ladders: int, repeat: int) -> Run:
        """A job per rung per ladder, all submitted at once to an agent with a slot for each."""
        requests = self.job_requests() * ladders
        agent_dir = self.work / "agent"
        agent = await start_bench_agent(self.procs, f"jobs-{ladders}-{repeat}", self.master.url, agent_dir,
                                        *self.agent_flags(len(requests)))
        try:
            await agent.polling()
            load = os.getloadavg()[0]
            before = agent.cpu()
            submitted = time.time()
            ids = [(await self.client.submit_job(request)).id for request in requests]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fail_on_exit, agent)
                try:
                    jobs = await wait_for_jobs(self.client, ids, timeout=120 + 10 * len(requests) * self.duration)
                except AssertionError as exc:
                    raise BenchFailed(f"{exc}; the agent's log:\n{agent.process.log}") from None
                nursery.cancel_scope.cancel()
            used = agent.cpu() - before
        finally:
            await agent.stop()
        shutil.rmtree(agent_dir / "outputs", ignore_errors=True)
        by_id = {job.id: job for job in jobs}
        ordered = [by_id[job_id] for job_id in ids]
        failed = [job for job in ordered if job.status is not JobStatus.COMPLETED]
        if failed:
            raise BenchFailed(f"job {failed[0].id} {failed[0].status.value}: {failed[0].error}\n{agent.process.log}")
        finished = max(job.completed_at.timestamp() for job in ordered if job.completed_at is not None)
        rungs = len(self.ladder.rungs)
        per_rung = [ordered[index::rungs] for index in range(rungs)]
        return Run(
            mode=JOBS, ladders=ladders, repeat=repeat, makespan_s=finished - submitted, cpu_s=used.encoders_s,
            rung_fps=tuple(median([job.metrics["frames"] / job.metrics["duration"] for job in mine])
                           for mine in per_rung),
            rung_bytes=tuple(int(median([job.metrics["output_file_bytes"] for job in mine])) for mine in per_rung),
            agent_cpu_s=used.agent_s, load_before=load,
        )


async def _fail_on_exit(agent: BenchAgent) -> None:
    """Raise as soon as the agent exits: its jobs would never finish."""
    returncode = await agent.process.process.wait()
    raise BenchFailed(f"the agent exited (code {returncode}) with jobs to run; its log:\n{agent.process.log}")


async def _run(argv: list[str], cwd: Path) -> None:
    result = await trio.run_process(argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
                                    check=False, cwd=cwd, env=child_env())
    if result.returncode != 0:
        raise BenchFailed(f"ffmpeg exited {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}")


async def generated_clip(ffmpeg: str, directory: Path, duration: float) -> Path:
    """A 1080p30 test pattern with noise (hard to compress, as in every bench) and a tone, near-lossless x264 + AAC."""
    directory.mkdir(parents=True, exist_ok=True)
    clip = directory / f"source-{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}p{SOURCE_FPS}-{num(duration)}s.mp4"
    if not clip.exists():
        width, height = SOURCE_SIZE
        picture = TEST_SOURCE.format(width=width, height=height, fps=SOURCE_FPS)
        await _run([
            ffmpeg, "-hide_banner", "-nostdin", "-y", "-f", "lavfi", "-i", picture,
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", num(duration),
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-f", "mp4", str(clip),
        ], directory)
    return clip


async def measure(args: argparse.Namespace, work: Path) -> tuple[list[Run], dict[str, Any]]:
    """Every run of the plan, and the exact commands of one ladder in each mode."""
    ffmpeg = find_ffmpeg()
    clip = args.input.resolve() if args.input else await generated_clip(ffmpeg, work / "input", args.duration)
    info = await probe_media(ffmpeg, clip)
    duration = min(args.duration, info.duration) if args.duration else info.duration
    ladder = Ladder.from_params({"ladder": args.ladder, "package": args.package, "preset": args.preset})
    levels = args.levels or sorted({1, os.cpu_count() or 1})
    order = plan(levels, args.repeats, args.modes)
    runs: list[Run] = []
    async with trio.open_nursery() as nursery:
        master = await nursery.start(serve_bench_master, work / "master.db")
        procs = Processes(nursery)
        try:
            async with MasterClient(master.url) as client:
                bench = Bench(args, ffmpeg, clip, duration, bool(info.audio_codec), ladder, work, master, client,
                              procs)
                commands = exact_commands(bench)
                for number, (repeat, level, mode) in enumerate(order, 1):
                    if mode == JOBS:
                        run = await bench.run_jobs(level, repeat)
                    else:
                        run = await bench.run_ladders(SINGLE if mode == SINGLE else SPLIT, level, repeat)
                    runs.append(run)
                    print(f"[{number}/{len(order)}] repeat {repeat + 1} {mode} x{level}: {run.makespan_s:.2f}s, "
                          f"CPU {run.cpu_s:.1f}s", file=sys.stderr, flush=True)
        finally:
            await procs.stop_all()
        nursery.cancel_scope.cancel()
    commands["input"] = {"path": str(clip), "duration_s": duration, "audio": info.audio_codec or "none",
                         "video": f"{info.codec} {info.width}x{info.height} {info.fps:g} fps"}
    return runs, commands


def exact_commands(bench: Bench) -> dict[str, Any]:
    """The argv lists of one ladder in each ladder mode, and the job requests and agent flags of the jobs mode."""
    commands: dict[str, Any] = {}
    for mode in (SINGLE, SPLIT):
        plan, _, _ = bench.ladder_plan(mode, 0)
        commands[mode] = {"encodes": plan.encodes, "package": plan.package}
    commands[JOBS] = {
        "agent_flags": bench.agent_flags(len(bench.ladder.rungs)),
        "requests": [{"scenario": r.scenario, "parameters": r.parameters} for r in bench.job_requests()],
    }
    return commands


def summarise(runs: Sequence[Run], ladder: Ladder, cores: int) -> list[dict[str, Any]]:
    """Medians per level and mode, in level order then mode order."""
    rows = []
    for level in sorted({run.ladders for run in runs}):
        for mode in MODES:
            mine = [run for run in runs if run.ladders == level and run.mode == mode]
            if not mine:
                continue
            agent = [run.agent_cpu_s for run in mine if run.agent_cpu_s is not None]
            rows.append({
                "ladders": level, "mode": mode, "repeats": len(mine),
                "makespan_s": median([run.makespan_s for run in mine]),
                "cpu_s": median([run.cpu_s for run in mine]),
                "cpu_share": median([run.cpu_share(cores) for run in mine]),
                "agent_cpu_s": median(agent) if agent else None,
                "rung_fps": {rung.text: median([run.rung_fps[i] for run in mine]) for i, rung in enumerate(ladder.rungs)},
                "rung_bytes": {rung.text: median([run.rung_bytes[i] for run in mine])
                               for i, rung in enumerate(ladder.rungs)},
                "package_bytes": median([run.package_bytes for run in mine]) if mode != JOBS else None,
            })
    return rows


def columns(ladder: Ladder) -> list[str]:
    return [
        "ladders at once", "mode", "makespan s", "CPU s", "CPU % of cores",
        *[f"{rung.text} fps" for rung in ladder.rungs], *[f"{rung.text} MB" for rung in ladder.rungs], "package MB",
    ]


def table_rows(summary: Sequence[dict[str, Any]], ladder: Ladder) -> list[list[Any]]:
    return [
        [row["ladders"], row["mode"], row["makespan_s"], row["cpu_s"], 100 * row["cpu_share"],
         *[row["rung_fps"][rung.text] for rung in ladder.rungs],
         *[row["rung_bytes"][rung.text] / 1e6 for rung in ladder.rungs],
         row["package_bytes"] / 1e6 if row["package_bytes"] is not None else float("nan")]
        for row in summary
    ]


def findings(summary: Sequence[dict[str, Any]]) -> list[str]:
    """Per level: which mode finished first and by how much, and which used the least CPU per ladder.

    CPU seconds hardly move when other work shares the machine; makespans do,
    so both are given.
    """
    lines = []
    for level in sorted({row["ladders"] for row in summary}):
        rows = {row["mode"]: row for row in summary if row["ladders"] == level}
        at_once = f"{level} ladder{'s' if level > 1 else ''} at once"
        for key, what, unit in (("makespan_s", "finished first in", "s"), ("cpu_s", "used the least CPU:", "CPU s")):
            best = min(rows.values(), key=lambda row: row[key])
            others = "; ".join(f"{mode} {row[key]:.1f} ({row[key] / best[key]:.2f}x)"
                               for mode, row in rows.items() if row is not best)
            lines.append(f"- {at_once}: {best['mode']} {what} {best[key]:.1f} {unit}" + (f"; {others}." if others else "."))
        if JOBS in rows and rows[JOBS]["agent_cpu_s"] is not None:
            lines.append(f"  The agent's own CPU in the jobs mode: {rows[JOBS]['agent_cpu_s']:.2f} s "
                         f"({rows[JOBS]['agent_cpu_s'] / rows[JOBS]['cpu_s']:.1%} of its encoders').")
    return lines


def _shown(argv: Sequence[str], work: Path, ffmpeg: str) -> str:
    return shlex.join(["ffmpeg" if arg == ffmpeg else arg for arg in argv]).replace(str(work), "$WORK")


def markdown(summary: Sequence[dict[str, Any]], runs: Sequence[Run], ladder: Ladder, settings: dict[str, Any],
             host: dict[str, Any], commands: dict[str, Any], png: str, work: Path, ffmpeg: str) -> str:
    loads = [run.load_before for run in runs]
    source = commands["input"]
    lines = [
        f"# Ladder modes: {ladder.package} ladder {settings['ladder']} (preset {ladder.preset}), "
        f"median of {settings['repeats']} interleaved repeats",
        "",
        f"{host['cores']} cores ({host['cpu_model']}), {host['ffmpeg']}, Python {host['python']}.",
        f"Command: `{host['command']}`",
        f"Input: {source['video']}, audio {source['audio']}, {source['duration_s']:g} s"
        f"{' (generated: testsrc2 with noise, and a tone)' if not settings.get('input') else ''}.",
        "",
        markdown_table(columns(ladder), table_rows(summary, ladder)),
        "",
        f"![makespan and CPU per mode]({png})",
        "",
        "Makespan: start of the first process (or the submit) to the end of the last. CPU: every FFmpeg process's "
        "user + system seconds (encodes and packaging; in the jobs mode the agent's encoders, its own CPU apart). "
        "fps: a rung's frames over the wall time of the process (or job) that made it. MB: a rung's video "
        "(ladder modes: the staged rung, video only; jobs: the job's MP4 with its audio); package: the whole "
        "package of one ladder. Every ladder mode's package passed the player checks (agent/worker/package_check/).",
        "",
        "## Findings",
        "",
        *findings(summary),
        f"- The machine's 1-minute load average as each run started: median {median(loads):.2f}, highest "
        f"{max(loads):.2f} ({host['cores']} cores); a load above the cores means other work shared the machine.",
        "",
        "## Exact commands (one ladder; `$WORK` is the bench's work directory)",
        "",
    ]
    for mode in (SINGLE, SPLIT):
        if mode in commands:
            lines += [f"### {mode}", "", "```"]
            lines += [_shown(argv, work, ffmpeg) for argv in commands[mode]["encodes"]]
            lines += ["# then, in the package directory:", _shown(commands[mode]["package"], work, ffmpeg), "```", ""]
    jobs = commands[JOBS]
    lines += [f"### {JOBS}", "", f"Agent: `python -m agent ... {_shown(jobs['agent_flags'], work, ffmpeg)}` "
              "(slots: one per job of the run). One job per rung:", "", "```"]
    lines += [json.dumps(request).replace(str(work), "$WORK") for request in jobs["requests"]]
    lines += ["```"]
    return "\n".join(lines)


def plot(summary: Sequence[dict[str, Any]], path: Path) -> None:
    """Makespan and CPU seconds per mode, grouped by the number of ladders at once."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    levels = sorted({row["ladders"] for row in summary})
    modes = [mode for mode in MODES if any(row["mode"] == mode for row in summary)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(modes)
    for offset, mode in enumerate(modes):
        rows = {row["ladders"]: row for row in summary if row["mode"] == mode}
        xs = [index + (offset - (len(modes) - 1) / 2) * width for index in range(len(levels))]
        for axes, key in ((left, "makespan_s"), (right, "cpu_s")):
            axes.bar(xs, [rows[level][key] if level in rows else 0 for level in levels], width, label=mode)
    for axes, title in ((left, "makespan (s)"), (right, "CPU time of all processes (s)")):
        axes.set_xticks(range(len(levels)), [f"{level} ladder{'s' if level > 1 else ''} at once" for level in levels])
        axes.set_title(title)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(loc="upper left")
    save_figure(figure, path)


def _modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"{text!r}: give modes among {', '.join(MODES)}")
    return modes


def _ladder(text: str) -> str:
    from agent.scenarios import JobRejected

    try:
        Ladder.parse(text)
    except JobRejected as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ladder", description=__doc__.split("\n")[0])
    parser.add_argument("--ladder", type=_ladder, default=DEFAULT_LADDER, help=f"the rungs (default {DEFAULT_LADDER})")
    parser.add_argument("--package", choices=("hls", "dash", "files"), default="hls", help="package (default hls)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset of every rung (default veryfast, the "
                        "scenarios' default)")
    parser.add_argument("--input", type=Path, help="a clip to encode (default: a generated 1080p30 clip with audio)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of input to encode (default 8)")
    parser.add_argument("--levels", type=levels_flag("numbers of ladders at once, 1 or more, such as 1,2"),
                        help="ladders at once (default 1 and the number of cores)")
    parser.add_argument("--modes", type=_modes, default=list(MODES), help="modes to run (default single,split,jobs)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    parser.add_argument("--poll-interval", type=duration_flag, default=DEFAULT_POLL_INTERVAL,
                        help=f"the agent's --poll-interval in the jobs mode (default {DEFAULT_POLL_INTERVAL})")
    add_output_flags(parser, "ladder", goals=False, work_dir=True)
    return parser


def _bench_failure(exc: BaseException) -> BenchFailed | None:
    """The BenchFailed in ``exc``, as raised or inside the exception groups of nurseries; None if there is none."""
    if isinstance(exc, BenchFailed):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        return next((found for inner in exc.exceptions if (found := _bench_failure(inner)) is not None), None)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.input is not None and not args.input.is_file():
        print(f"error: --input {args.input} is not a file", file=sys.stderr)
        return 2
    with work_directory(args.work_dir) as work:
        try:
            runs, commands = trio.run(measure, args, work)
        except (BenchFailed, ExceptionGroup) as exc:
            failure = _bench_failure(exc)
            if failure is None:
                raise
            print(f"error: {failure}", file=sys.stderr)
            return 1
    cores = os.cpu_count() or 1
    ladder = Ladder.from_params({"ladder": args.ladder, "package": args.package, "preset": args.preset})
    summary = summarise(runs, ladder, cores)
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
                if key not in ("out", "work_dir")}
    host = machine()
    out = fresh_out_dir(args.name, args.out)
    png = out / f"{args.name}.png"
    ffmpeg = find_ffmpeg()
    text = markdown(summary, runs, ladder, settings, host, commands, png.name, work, ffmpeg)
    write_outputs(out, args.name, {
        "machine": host, "settings": settings, "summary": summary, "commands": commands,
        "runs": [attrs.asdict(run) | {"cpu_share": run.cpu_share(cores)} for run in runs],
    }, columns(ladder), table_rows(summary, ladder), text)
    plot(summary, png)
    print(text)
    print(f"wrote {out}/{args.name}.{{json,csv,md,png}}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
