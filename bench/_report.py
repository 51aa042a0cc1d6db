"""Statistics and the files a bench writes: JSON with everything, CSV and a markdown table of the summary."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.worker.engines.ffmpeg import find_ffmpeg
from agent.worker.hardware import HostFacts

__all__ = ["machine", "markdown_table", "median", "percentile", "write_outputs"]


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
        "command": shlex.join(["python", "-m", _module_name(), *sys.argv[1:]]),
    }


def _module_name() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


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


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
