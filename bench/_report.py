"""Statistics and the files a bench writes: JSON with everything, CSV and a markdown table of the summary."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.worker.engines.ffmpeg import find_ffmpeg
from agent.worker.hardware import HostFacts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "GOALS_NOTE", "add_output_flags", "fresh_out_dir", "goal", "goal_line", "goals_exit_code", "machine",
    "markdown_table", "median", "percentile", "revision", "save_figure", "say", "work_directory",
    "write_outputs",
]

# Where runs go unless --out says otherwise: never over the committed bench/results/.
RUNS_DIR = Path("bench-results")
GOALS_NOTE = (
    "Goals: each line gives the measured value, the bar it must reach, met or NOT met, and what it measures. "
    "A missed goal makes the exit code 1 only with --check."
)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolated between the nearest samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, CPU, FFmpeg build, Python, and the exact command."""
    ffmpeg = find_ffmpeg()
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=False).stdout
    host = HostFacts.detect()
    return {
        "cores": os.cpu_count() or 1,
        "cpu_model": host.cpu_model,
        "ffmpeg": version.splitlines()[0] if version else ffmpeg,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": shlex.join(["python", *_how_run(), *sys.argv[1:]]),
    }


def revision(checkout: Path) -> str:
    """The commit a checkout is at, and whether its ``agent/`` has uncommitted changes: the figures depend on both."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return f"{commit} with uncommitted changes in agent/" if git("status", "--porcelain", "agent") else commit


def say(text: str) -> None:
    """A progress line on stderr, at once: stdout carries only the final table."""
    print(text, file=sys.stderr, flush=True)


def add_output_flags(parser: argparse.ArgumentParser, name: str, *, goals: bool = True, work_dir: bool = False) -> None:
    """``--out`` and ``--name`` (default ``name``); ``--check`` for a bench with ``goals``; ``--work-dir`` if asked.

    ``--work-dir`` is for benches that write files worth keeping to look at
    (inputs, encodes); see :func:`work_directory`.
    """
    parser.add_argument("--out", type=Path, help="output directory (default: a new bench-results/<name>-<date>-<time>/; "
                        "the committed results are in bench/results/)")
    parser.add_argument("--name", default=name, help=f"output file name stem (default {name})")
    if goals:
        parser.add_argument("--check", action="store_true",
                            help="exit 1 when a goal is missed (default: report it, exit 0)")
    if work_dir:
        parser.add_argument("--work-dir", type=Path,
                            help="inputs and outputs of the runs (default: a temporary directory)")


@contextlib.contextmanager
def work_directory(given: Path | None = None, *, prefix: str = "ffrtmp-bench-") -> Iterator[Path]:
    """``given`` (a ``--work-dir``, kept afterwards), or a new temporary directory ``prefix...`` removed on leaving."""
    work = (given or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    try:
        yield work
    finally:
        if given is None:
            shutil.rmtree(work, ignore_errors=True)


def _how_run() -> list[str]:
    """``-m bench.x`` for a module run, the script's path for a file run."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return ["-m", spec.name] if spec is not None else [sys.argv[0]]


def fresh_out_dir(name: str, given: Path | None) -> Path:
    """``given``, or a new ``bench-results/<name>-<date>-<time>`` under the current directory."""
    if given is not None:
        return given
    base = RUNS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, count = base, 1
    while candidate.exists():
        count += 1
        candidate = base.with_name(f"{base.name}-{count}")
    return candidate


def goal(value: float, bar: float, meaning: str, *, at_most: bool = False, **context: Any) -> dict[str, Any]:
    """One goal: ``value`` must reach ``bar`` (stay below it with ``at_most``); ``meaning`` says what it measures."""
    met = value < bar if at_most else value >= bar
    return {"value": value, "bar": bar, "at_most": at_most, "met": met, "meaning": meaning, **context}


def goal_line(name: str, result: Mapping[str, Any]) -> str:
    """``- name: 0.012, goal below 0.02: met. <what it measures>``, for the markdown and the terminal."""
    limit = "below" if result.get("at_most") else "at least"
    verdict = "met" if result["met"] else "NOT met"
    return f"- {name}: {result['value']:.3f}, goal {limit} {result['bar']}: {verdict}. {result['meaning']}"


def goals_exit_code(goals: Mapping[str, Mapping[str, Any]], *, check: bool) -> int:
    """1 when a goal is missed and ``check`` asks for it, else 0; a missed goal is named on stderr either way."""
    missed = [name for name, result in goals.items() if not result["met"]]
    if not missed:
        return 0
    if check:
        print(f"error: goals missed: {', '.join(missed)} (exit 1 because of --check)", file=sys.stderr)
        return 1
    print(f"note: goals missed: {', '.join(missed)}; --check makes that exit 1", file=sys.stderr)
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(
    directory: Path, name: str, data: dict[str, Any], columns: Sequence[str], rows: Sequence[Sequence[Any]],
    markdown: str,
) -> list[Path]:
    """``<name>.json`` (everything), ``<name>.csv`` (the summary rows), ``<name>.md``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.{ext}" for ext in ("json", "csv", "md")]
    paths[0].write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")
    with paths[1].open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
    paths[2].write_text(markdown.rstrip() + "\n")
    return paths


def save_figure(figure: Figure, path: Path) -> None:
    """Lay out, write ``path`` and free the figure (pyplot keeps every open one)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
