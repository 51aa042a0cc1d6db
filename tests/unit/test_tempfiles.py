"""Temporary files named for their writer, and removing a dead writer's (agent/worker/tempfiles.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.worker.tempfiles import remove_stale_temporaries, temporary_for


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(process.stdout)


def test_a_temporary_is_a_hidden_sibling_that_names_its_writer(tmp_path: Path) -> None:
    """Hidden, in the same directory (so the rename is atomic), never matching the final name's pattern."""
    temporary = temporary_for(tmp_path / "clip.mp4")
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(".clip.mp4.") and f".{os.getpid()}-" in temporary.name
    assert not temporary.name.endswith(".mp4")


def test_only_temporaries_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    """A live writer's file stays, a dead one's goes, and final files are never touched."""
    final = tmp_path / "clip.mp4"
    final.write_bytes(b"done")
    live = tmp_path / f".other.mp4.{os.getppid()}-ab12.partial"
    dead = tmp_path / f".clip.mp4.{dead_pid()}-cd34.partial"
    for path in (live, dead):
        path.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, live.name])


def test_a_temporary_with_our_own_pid_is_from_an_earlier_run(tmp_path: Path) -> None:
    """A restarted container gets the same pid; nothing is written before the clean-up, so it is stale."""
    mine = temporary_for(tmp_path / "job.json")
    mine.write_text("{}")
    assert remove_stale_temporaries(tmp_path) == [mine]


def test_a_missing_directory_has_nothing_to_remove(tmp_path: Path) -> None:
    """The first start, before any input was generated."""
    assert remove_stale_temporaries(tmp_path / "inputs") == []
