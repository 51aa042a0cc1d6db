"""The one way the agent starts a child process: its own session, guarded, a minimal environment.

Every program the agent runs — encoders, test-input generation, media
probes, hardware-encoder and GStreamer detection — starts through
:func:`run_child`, so each gets the same three guarantees:

* a session (process group) of its own, so that a stop reaches every
  process it starts in turn;
* its process group registered with the :class:`~agent.worker.guardian.Guardian`
  from start to exit, so that it dies with the agent even when the agent
  is killed with SIGKILL;
* the environment of :func:`child_env`: secrets in the agent's environment
  (the API key above all) never reach it.

The guardian process itself is the one exception: it cannot guard itself.
A child is registered right after it starts; one that the agent's death
catches before that is found by the guardian's mark in its environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import trio

from agent.worker.guardian import Guardian

__all__ = ["ENV_PASSTHROUGH", "STDERR_TAIL_LINES", "capture_child", "child_env", "kill_group", "run_child"]

# Variables a child may need; everything else (API keys above all) stays out.
ENV_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH")

# Lines of a child's stderr kept for its error or result: the reason a program
# gives for failing is in the last few, and the tail must fit a JSON result.
STDERR_TAIL_LINES = 40

StopChild = Callable[[trio.Process], Awaitable[None]]


def child_env() -> dict[str, str]:
    """The agent's environment reduced to :data:`ENV_PASSTHROUGH`."""
    return {name: os.environ[name] for name in ENV_PASSTHROUGH if name in os.environ}


async def kill_group(process: trio.Process) -> None:
    """The default stop: SIGKILL to the whole group; for children whose output is thrown away on cancel."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_child(
    argv: Sequence[str],
    *,
    guardian: Guardian | None,
    stop: StopChild = kill_group,
    cwd: Path | None = None,
    task_status: trio.TaskStatus[trio.Process] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run ``argv`` to its end and return its exit code.

    Meant for ``nursery.start``: ``started()`` hands back the
    :class:`trio.Process`, whose ``stdout`` and ``stderr`` are pipes the
    caller must read (stdin is ``/dev/null``). On cancel, ``stop`` is
    awaited (cancelled in turn once the child exits) and this returns only
    after the child has exited, then raises Cancelled.

    Args:
        argv: the program and its arguments, never a shell string.
        guardian: kills the child's group should the agent die first; None
            for tools run outside an agent (tests, benchmarks).
        stop: how to stop it on cancel; encoders pass a graceful policy.
        cwd: the working directory.

    Example::

        process = await nursery.start(partial(run_child, argv, guardian=guardian))
    """
    process: trio.Process | None = None
    try:
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                    start_new_session=True,
                    cwd=cwd,
                    env=child_env() | (guardian.child_env() if guardian is not None else {}),
                    deliver_cancel=stop,
                )
            )
            if guardian is not None:
                await guardian.watch(process.pid)
            task_status.started(process)
    finally:
        if guardian is not None and process is not None:
            with trio.CancelScope(shield=True):
                await guardian.release(process.pid)
    # run_process has reaped it: wait() returns the exit code at once, typed as int.
    return await process.wait()


async def capture_child(
    argv: Sequence[str], *, guardian: Guardian | None, stop: StopChild = kill_group
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` as :func:`run_child` does and collect all it writes to stdout and stderr.

    For short runs with small output (probes, gst-inspect, test-input
    generation); bound it with ``trio.fail_after`` where it could hang.
    """
    output = {"stdout": bytearray(), "stderr": bytearray()}

    async def drain(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
        assert stream is not None
        async for chunk in stream:
            into += chunk

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(run_child, argv, guardian=guardian, stop=stop))
        nursery.start_soon(drain, process.stdout, output["stdout"])
        nursery.start_soon(drain, process.stderr, output["stderr"])
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(argv), process.returncode, bytes(output["stdout"]),
                                       bytes(output["stderr"]))
