"""bench/ladder.py runs end to end on a tiny ladder and writes well-formed outputs.

Nothing here asserts a time or a ratio: the figures are the script's
business. The run starts its own master on 127.0.0.1 port 0 and its own
agent processes, checks each ladder mode's package with the player checks,
and stops everything on the way out.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=170,
        stdin=subprocess.DEVNULL, check=False, env=dict(os.environ),
    )


def test_the_ladder_bench_runs_as_a_file_from_elsewhere() -> None:
    """--help from another directory as a file: usage naming --out and --ladder, exit 0."""
    result = run([str(REPO / "bench" / "ladder.py"), "--help"], cwd=REPO / "tests")
    assert result.returncode == 0 and "--out" in result.stdout and "--ladder" in result.stdout, result.stderr


def test_the_ladder_bench_measures_every_mode_and_writes_json_csv_markdown_and_a_png(tmp_path: Path) -> None:
    """Two tiny rungs, one second (FFmpeg writes no complete HLS master playlist for less), 1 and 2 ladders at once, one repeat: six runs, every output written and parsed."""
    result = run([
        "-m", "bench.ladder", "--ladder", "240p30-h264,144p30-h264", "--duration", "1", "--levels", "1,2",
        "--repeats", "1", "--out", str(tmp_path), "--name", "lad",
    ])
    assert result.returncode == 0, result.stderr[-5000:]
    data = json.loads((tmp_path / "lad.json").read_text())
    assert sorted((run["mode"], run["ladders"]) for run in data["runs"]) == [
        ("jobs", 1), ("jobs", 2), ("single", 1), ("single", 2), ("split", 1), ("split", 2),
    ]
    assert all(run["makespan_s"] > 0 and run["cpu_s"] > 0 and all(run["rung_bytes"]) for run in data["runs"])
    assert all(run["agent_cpu_s"] is not None for run in data["runs"] if run["mode"] == "jobs")
    assert [len(data["commands"][mode]["encodes"]) for mode in ("single", "split")] == [1, 2]
    assert len(data["commands"]["jobs"]["requests"]) == 2
    with (tmp_path / "lad.csv").open(newline="") as rows:
        table = list(csv.reader(rows))
    assert table[0][:3] == ["ladders at once", "mode", "makespan s"] and "240p30-h264 fps" in table[0]
    assert len(table) == 7
    markdown = (tmp_path / "lad.md").read_text()
    assert "Command: `python -m bench.ladder --ladder 240p30-h264,144p30-h264" in markdown
    assert "## Findings" in markdown and "### split" in markdown and "(lad.png)" in markdown
    assert "-filter_complex" in markdown and "$WORK/" in markdown
    assert markdown.strip() in result.stdout
    assert (tmp_path / "lad.png").read_bytes().startswith(PNG_SIGNATURE)
