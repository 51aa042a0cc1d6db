"""The benchmark scripts run end to end on tiny settings and write well-formed outputs.

The figures themselves are the scripts' business, not the tests': nothing
here asserts a time or a ratio. Each script starts its own master on
127.0.0.1 port 0 and its own agent processes, and stops them on the way out.
The scripts run as modules and as files; without ``--out`` they write to a
new directory, never over the committed ``bench/results/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bandwidth_scaling, dispatch, farm_sim
from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str], cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=110,
        stdin=subprocess.DEVNULL, check=False, env={**os.environ, **env},
    )


def run_script(module: str, *args: str) -> str:
    result = run(["-m", module, *args])
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout


def committed_results() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (REPO / "bench/results").iterdir()}


@pytest.mark.parametrize("script", ["bandwidth_scaling", "dispatch", "farm_sim"])
def test_each_script_runs_as_a_file_and_as_a_module(script: str, tmp_path: Path) -> None:
    """--help from another directory as a file, and from the checkout as a module: usage, exit 0."""
    as_file = run([str(REPO / "bench" / f"{script}.py"), "--help"], cwd=tmp_path)
    as_module = run(["-m", f"bench.{script}", "--help"])
    for result in (as_file, as_module):
        assert result.returncode == 0 and "--check" in result.stdout and "--out" in result.stdout, result.stderr


def test_a_missing_extra_is_one_line_naming_the_install_command(tmp_path: Path) -> None:
    """Without psutil: exit 2 and the [bench] extra to install, before any work; no traceback."""
    (tmp_path / "psutil.py").write_text("raise ImportError(\"No module named 'psutil'\")\n")
    result = run([str(REPO / "bench" / "dispatch.py"), "--help"], cwd=tmp_path, PYTHONPATH=str(tmp_path))
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "error: the benchmarks need psutil, from the [bench] extra: pip install '.[bench]' in the repository checkout"
    ]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as rows:
        return list(csv.reader(rows))


def test_bandwidth_scaling_writes_json_csv_markdown_and_a_png(tmp_path: Path) -> None:
    """Two 0.5 s jobs at levels 1 and 2 plus one adaptive run: every output is written and parses."""
    stdout = run_script(
        "bench.bandwidth_scaling", "--levels", "1,2", "--jobs", "2", "--duration", "0.5", "--repeats", "1",
        "--out", str(tmp_path), "--name", "bw",
    )
    data = json.loads((tmp_path / "bw.json").read_text())
    assert data["machine"]["cores"] >= 1
    assert [row["level"] for row in data["summary"]["levels"]] == [1, 2]
    assert {run["side"] for run in data["runs"]} == {"agent", "pool", "adaptive"}
    assert len(data["runs"]) == 5
    assert all(run["makespan_s"] > 0 and run["frames"] > 0 for run in data["runs"])
    assert set(data["summary"]["bars"]) >= {"agent_cpu_share_of_encoders", "adaptive_vs_best_fixed"}
    rows = read_csv(tmp_path / "bw.csv")
    assert rows[0] == list(bandwidth_scaling.COLUMNS)
    assert [row[0] for row in rows[1:]] == ["1", "2", "auto --adaptive"]
    markdown = (tmp_path / "bw.md").read_text()
    assert "| jobs at once |" in markdown and "(bw.png)" in markdown
    assert markdown.strip() in stdout
    png = (tmp_path / "bw.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def test_dispatch_writes_utilisation_latency_and_go_loop_rows_to_a_fresh_directory(tmp_path: Path) -> None:
    """Run as a file without --out: a new bench-results/dispatch-* directory, bench/results/ untouched; the outputs parse."""
    before = committed_results()
    result = run([
        str(REPO / "bench" / "dispatch.py"), "--durations", "0.2", "--concurrency", "1,2", "--seconds", "0.4",
        "--repeats", "1", "--latency-samples", "2", "--poll-interval", "0.5s", "--go-jobs", "2",
        "--go-poll-interval", "0.2s",
    ], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert committed_results() == before
    [out] = (tmp_path / "bench-results").iterdir()
    assert out.name.startswith("dispatch-") and f"wrote bench-results/{out.name}/dispatch." in result.stderr
    data = json.loads((out / "dispatch.json").read_text())
    loops = [(row["loop"], row["concurrency"]) for row in data["summary"]["utilisation"]]
    assert loops == [("agent", 1), ("agent", 2), ("Go loop model", 4)]
    assert all(0 < row["utilisation"] for row in data["summary"]["utilisation"])
    assert [entry["mode"] for entry in data["latency"]] == ["push", "long-poll", "polling"]
    measured = [entry for entry in data["latency"] if entry["available"]]
    assert measured and all(len(entry["samples_s"]) == 2 for entry in measured)
    rows = read_csv(out / "dispatch.csv")
    assert rows[0] == list(dispatch.UTILISATION_COLUMNS) and len(rows) == 4
    markdown = (out / "dispatch.md").read_text()
    assert "## Slot utilisation" in markdown and "## Dispatch latency" in markdown
    assert "A missed goal makes the exit code 1 only with --check." in markdown


def test_dispatch_runs_this_agent_the_before_checkout_and_celery_side_by_side(tmp_path: Path) -> None:
    """--peer celery --before: one cell, rows for the three, a Celery latency row and the agent/Celery goal lines."""
    run_script(
        "bench.dispatch", "--cells", "0.2x2", "--seconds", "0.4", "--repeats", "1", "--modes", "push",
        "--latency-samples", "2", "--go-jobs", "0", "--peer", "celery", "--before", str(REPO), "--prefetch", "0",
        "--out", str(tmp_path),
    )
    data = json.loads((tmp_path / "dispatch.json").read_text())
    assert [row["loop"] for row in data["summary"]["utilisation"]] == [dispatch.AGENT, dispatch.BEFORE, dispatch.CELERY]
    assert sorted(entry["mode"] for entry in data["latency"]) == ["Celery", "push", "push (agent before)"]
    assert set(data["summary"]["bars"]) >= {"agent/Celery utilisation D=0.2s x2", "agent/Celery dispatch p50 (push)"}


def test_farm_sim_ramps_a_few_simulated_agents_and_writes_every_output(tmp_path: Path) -> None:
    """Two steps of two and three agents against a real master: JSON, CSV, markdown and PNG are written and parse."""
    stdout = run_script(
        "bench.farm_sim", "--agents", "2,3", "--slots", "2", "--job-seconds", "0.5", "--progress-interval", "0.2",
        "--window", "1", "--out", str(tmp_path), "--name", "farm",
    )
    data = json.loads((tmp_path / "farm.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["settings"]["postgres"] is False
    assert [step["agents"] for step in data["steps"]] in ([2], [2, 3])  # the ramp stops at a step over the bar
    for step in data["steps"]:
        assert step["claims"] > 0 and step["master_cpu_percent"] >= 0 and step["master_connections"] > 0
        assert {"GET /jobs/next", "POST /results", "POST /jobs/{ref}/progress"} <= set(step["requests_per_s"])
        assert "GET /metrics" not in step["requests_per_s"]
    assert set(data["bars"]) == {"largest_farm_held"}
    rows = read_csv(tmp_path / "farm.csv")
    assert rows[0] == list(farm_sim.COLUMNS) and len(rows) == 1 + len(data["steps"])
    markdown = (tmp_path / "farm.md").read_text()
    assert "Command: `python -m bench.farm_sim --agents 2,3" in markdown and "master at commit " in markdown
    assert "(farm.png)" in markdown
    assert markdown.strip() in stdout
    assert (tmp_path / "farm.png").read_bytes().startswith(PNG_SIGNATURE)


def test_farm_sim_refuses_two_masters_without_postgres() -> None:
    """Two masters share a queue only through PostgreSQL: a usage error naming --postgres, exit 2."""
    result = run(["-m", "bench.farm_sim", "--masters", "2"])
    assert result.returncode == 2 and "needs --postgres DSN" in result.stderr, result.stderr
