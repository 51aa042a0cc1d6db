"""The benchmarks' goal lines and exit codes: each goal explained, a miss fatal only with --check."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._report import fresh_out_dir, goal, goal_line, goals_exit_code


def test_a_goal_line_gives_value_bar_verdict_and_meaning() -> None:
    """'at least' for a floor, 'below' for a ceiling; the meaning follows the verdict."""
    assert goal_line("ratio", goal(0.5, 0.9, "Agent over pool.")) == (
        "- ratio: 0.500, goal at least 0.9: NOT met. Agent over pool."
    )
    assert goal_line("cpu", goal(0.01, 0.02, "Agent CPU.", at_most=True)) == (
        "- cpu: 0.010, goal below 0.02: met. Agent CPU."
    )


def test_a_missed_goal_exits_1_only_with_check(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --check the miss is a note on stderr and exit 0; with it, an error line and exit 1."""
    goals = {"ratio": goal(0.5, 0.9, "m"), "cpu": goal(0.01, 0.02, "m", at_most=True)}
    assert goals_exit_code(goals, check=False) == 0
    assert capsys.readouterr().err == "note: goals missed: ratio; --check makes that exit 1\n"
    assert goals_exit_code(goals, check=True) == 1
    assert capsys.readouterr().err == "error: goals missed: ratio (exit 1 because of --check)\n"
    assert goals_exit_code({"cpu": goals["cpu"]}, check=True) == 0


def test_without_out_each_run_gets_a_new_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench-results/<name>-<time>, with a suffix when that exists; --out is used as given."""
    monkeypatch.chdir(tmp_path)
    first = fresh_out_dir("dispatch", None)
    first.mkdir(parents=True)
    second = fresh_out_dir("dispatch", None)
    assert first.parent == second.parent == Path("bench-results") and first != second
    assert fresh_out_dir("dispatch", Path("bench/results")) == Path("bench/results")
