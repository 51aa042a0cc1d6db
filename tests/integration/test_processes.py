"""The one way the agent starts children, and the guardian that outlives it (agent/worker/processes.py, guardian.py).

Real processes throughout: a guardian process, children that sleep, and the
guardian's pipe closed as an agent's death closes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from agent.worker.guardian import MARKER, Guardian
from agent.worker.processes import capture_child, run_child
from tests.support import processes_mentioning, wait_until_gone

# The bound for children of a dead agent.
ORPHAN_DEADLINE_S = 5.0


def sleeper(tmp_path: Path) -> list[str]:
    """A child that lives for an hour and names the test's tmp dir in its command line."""
    return [sys.executable, "-c", "import time, sys; time.sleep(3600)", str(tmp_path)]


async def test_a_child_runs_in_its_own_session_with_only_the_minimal_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its own process group, no secret from the agent's environment, PATH kept."""
    monkeypatch.setenv("FFMPEG_RTMP_API_KEY", "secret-key")
    script = "import os; print(os.getsid(0) == os.getpid(), sorted(os.environ))"
    result = await capture_child([sys.executable, "-c", script], guardian=None)
    own_session, names = result.stdout.decode().split(" ", 1)
    assert result.returncode == 0 and own_session == "True"
    assert "FFMPEG_RTMP_API_KEY" not in names and "PATH" in names


async def test_a_cancelled_child_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    """The default stop is SIGKILL to the group; run_child returns only once it is gone."""
    with trio.move_on_after(0.5):
        await capture_child(sleeper(tmp_path), guardian=None)
    assert processes_mentioning(str(tmp_path)) == []


async def test_children_die_with_the_agent_when_the_guardian_pipe_closes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Closing the guardian's stdin (what the agent's death does) kills every watched child."""
    guardian = Guardian()
    guardian_scope = trio.CancelScope()

    async def serve_guardian(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with guardian_scope:
            await guardian.serve(task_status=task_status)

    await nursery.start(serve_guardian)
    process = await nursery.start(partial(run_child, sleeper(tmp_path), guardian=guardian))
    environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
    assert any(entry.startswith(f"{MARKER}=".encode()) for entry in environ), "marked for the guardian"
    guardian_scope.cancel()  # closes the pipe, as a dying agent's exit would
    await wait_until_gone(str(tmp_path), ORPHAN_DEADLINE_S)


async def test_a_marked_child_never_watched_is_killed_too(tmp_path: Path) -> None:
    """A child the agent died before registering is found by the mark in its environment."""
    guardian_process = subprocess.Popen(
        [sys.executable, "-m", "agent.worker.guardian"], stdin=subprocess.PIPE, start_new_session=True
    )
    child = subprocess.Popen(
        sleeper(tmp_path), env={**os.environ, MARKER: str(guardian_process.pid)}, start_new_session=True
    )
    try:
        assert guardian_process.stdin is not None
        guardian_process.stdin.close()
        with trio.fail_after(ORPHAN_DEADLINE_S):
            while child.poll() is None:
                await trio.sleep(0.05)
        assert child.returncode == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        guardian_process.wait()


async def test_a_guardian_whose_start_is_cancelled_exits_at_any_moment() -> None:
    """A signal while the agent starts may cancel the guardian's start after its process exists.

    Its pipe is closed then too, so the guardian (which ignores SIGINT and SIGTERM) exits and the
    start returns; the cancel comes at a spread of moments across the start.
    """
    for attempt in range(40):
        guardian = Guardian()
        with trio.fail_after(10):
            with trio.move_on_after(attempt * 0.0005):
                async with trio.open_nursery() as nursery:
                    await nursery.start(guardian.serve)
                    nursery.cancel_scope.cancel()
