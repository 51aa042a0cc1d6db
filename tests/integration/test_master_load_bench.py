"""bench/master_load.py runs end to end on tiny settings and writes well-formed outputs.

The figures are the script's business: nothing here asserts a time or a
ratio. The script starts its own masters on 127.0.0.1 port 0 and stops them
on the way out.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import master_load
from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.master_load", *args], cwd=REPO, capture_output=True, text=True,
        timeout=110, stdin=subprocess.DEVNULL, check=False,
    )


def test_two_masters_side_by_side_write_json_csv_and_markdown(tmp_path: Path) -> None:
    """This checkout's master and a --before one (here the same checkout), two clients, one short repeat."""
    result = run("--clients", "2", "--seconds", "0.5", "--repeats", "1", "--before", str(REPO),
                 "--out", str(tmp_path), "--name", "load")
    assert result.returncode == 0, result.stderr[-5000:]
    data = json.loads((tmp_path / "load.json").read_text())
    assert [master["master"] for master in data["masters"]] == ["current", "before"]
    for master in data["masters"]:
        kinds = [phase["kind"] for phase in master["phases"]]
        assert kinds == ["health", "cycles"]
        assert all(phase["done"] > 0 for phase in master["phases"])
        assert master["ratio"] > 0 and master["master_cpu_ms_per_cycle"] > 0
    assert set(data["bars"]) == {"cycles_per_health_current", "cycles_per_health_before"}
    with (tmp_path / "load.csv").open(newline="") as rows:
        assert next(csv.reader(rows)) == list(master_load.COLUMNS)
    markdown = (tmp_path / "load.md").read_text()
    assert "Command: `python -m bench.master_load --clients 2" in markdown and "before: " in markdown
    assert markdown.strip() in result.stdout


def test_the_agent_client_runs_the_same_phases(tmp_path: Path) -> None:
    """--client agent: the agent's own MasterClient does the health requests and the cycles."""
    result = run("--client", "agent", "--clients", "1", "--seconds", "0.5", "--repeats", "1",
                 "--out", str(tmp_path), "--name", "load")
    assert result.returncode == 0, result.stderr[-5000:]
    data = json.loads((tmp_path / "load.json").read_text())
    assert data["settings"]["client"] == "agent"
    [master] = data["masters"]
    assert all(phase["done"] > 0 for phase in master["phases"])


def test_profile_splits_a_cycle_between_the_routes_and_the_rest(tmp_path: Path) -> None:
    """--profile: py-spy samples one more cycles phase, kept out of the medians; the split in JSON and Markdown."""
    result = run("--clients", "2", "--seconds", "1", "--repeats", "1", "--profile", "--out", str(tmp_path),
                 "--name", "load")
    assert result.returncode == 0, result.stderr[-5000:]
    [master] = json.loads((tmp_path / "load.json").read_text())["masters"]
    assert [phase["kind"] for phase in master["phases"]] == ["health", "cycles"]
    profile = master["profile"]
    assert profile["samples"] > 0 and 0 < profile["route_share"] < 1
    assert profile["route_ms_per_cycle"] + profile["rest_ms_per_cycle"] == pytest.approx(
        master["master_cpu_ms_per_cycle"])
    assert "| ratio with free routes |" in (tmp_path / "load.md").read_text()


def test_a_directory_that_is_not_a_checkout_is_a_usage_error(tmp_path: Path) -> None:
    """--before must name a checkout of this project: exit 2 and how to make one, no traceback."""
    result = run("--before", str(tmp_path))
    assert result.returncode == 2 and "git worktree add" in result.stderr and "Traceback" not in result.stderr


def test_the_script_runs_as_a_file_from_another_directory(tmp_path: Path) -> None:
    """``python bench/master_load.py --help`` outside the checkout: usage, exit 0."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / "master_load.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "--before" in result.stdout and "--check" in result.stdout, result.stderr
