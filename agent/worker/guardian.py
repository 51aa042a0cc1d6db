"""A watchdog process that kills the agent's children if the agent dies without stopping them.

Children (encoders, test-input generation, probes; see
:mod:`agent.worker.processes`) run in sessions of their own (so that a stop
reaches their whole process group), which also means nothing stops them when
the agent is killed with SIGKILL or by the OOM killer. ``PR_SET_PDEATHSIG`` cannot help: trio
starts processes from worker threads, and that signal fires when the *thread*
that forked exits, which would kill healthy encoders.

So each agent starts one guardian: ``python -m agent.worker.guardian``, in a
session of its own, reading the agent's pipe. The agent writes ``+<pgid>``
when a child starts and ``-<pgid>`` when it has exited. When the pipe
reaches end of file — the agent is gone, however it went — the guardian
kills every process group still listed and exits.

A child killed with the agent in the instant between its start and its
``+<pgid>`` would escape that list, so every child also carries
``FFRTMP_GUARDIAN=<guardian pid>`` in its environment (:meth:`Guardian.child_env`),
and the guardian kills every process still marked so as it leaves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import attrs
import trio

log = logging.getLogger(__name__)

# The environment variable that marks a child as this guardian's to kill.
MARKER = "FFRTMP_GUARDIAN"


def kill_groups(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def kill_marked(marker: bytes) -> None:
    """SIGKILL every process whose environment holds the entry ``marker`` (``NAME=value``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)


def guard() -> None:
    """The guardian's main loop over its stdin (blocking; it is a process of its own)."""
    # Terminal signals are for the agent: the guardian leaves only on end of file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # It acts only once the agent is gone. At the lowest priority, the wake-up each
    # message causes no longer preempts the agent on a busy machine (two per job);
    # it still gets the CPU, so the pipe never fills.
    os.nice(19)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        sign, digits = line[:1], line[1:].strip()
        if digits.isdigit():
            (groups.add if sign == b"+" else groups.discard)(int(digits))
    kill_groups(groups)
    kill_marked(f"{MARKER}={os.getpid()}".encode())


@attrs.define
class Guardian:
    """The agent's side: registers its children's process groups with the guardian process."""

    _stdin: trio.abc.SendStream | None = None
    _pid: int | None = None
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the guardian process until cancelled; closing its pipe lets it exit quietly."""

        # The process's own pipe: a cancel may come before ``self._stdin`` is set (a signal while
        # the agent starts), and the guardian, deaf to signals, leaves only on end of file.
        async def close_pipe(process: trio.Process) -> None:
            if process.stdin is not None:
                await process.stdin.aclose()

        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    [sys.executable, "-m", "agent.worker.guardian"],
                    stdin=subprocess.PIPE,
                    start_new_session=True,
                    check=False,
                    deliver_cancel=close_pipe,
                )
            )
            self._stdin = process.stdin
            self._pid = process.pid
            task_status.started()

    @property
    def pid(self) -> int | None:
        """The guardian process, once :meth:`serve` has started it."""
        return self._pid

    def child_env(self) -> dict[str, str]:
        """The mark a child's environment carries so that the guardian finds it even if never watched."""
        return {MARKER: str(self._pid)} if self._pid is not None else {}

    async def watch(self, pgid: int) -> None:
        await self._send(b"+%d\n" % pgid)

    async def release(self, pgid: int) -> None:
        await self._send(b"-%d\n" % pgid)

    async def _send(self, line: bytes) -> None:
        if self._stdin is None:
            return
        async with self._lock:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._stdin.send_all(line)


if __name__ == "__main__":
    guard()
