"""Runs one encoder process, watches its progress, and stops it the way encoders like to be stopped.

The encoder starts through :func:`~agent.worker.processes.run_child`: a
session of its own (a stop reaches every process it started), guarded,
a minimal environment. Stopping asks first — SIGINT makes ffmpeg write the
trailer, so a stopped job still leaves a playable file — then insists with
SIGTERM, then SIGKILL. An encoder whose output stops advancing for the stall
timeout is stopped that way too (see :mod:`agent.worker.stall`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
from functools import partial
from pathlib import Path
from typing import Callable

import attrs
import trio

from agent.worker.guardian import Guardian
from agent.worker.processes import STDERR_TAIL_LINES, run_child
from agent.worker.progress import ProgressParser, ProgressSnapshot
from agent.worker.stall import StallDetector

log = logging.getLogger(__name__)


@attrs.define
class StopPolicy:
    """Seconds to wait after SIGINT, then after SIGTERM, before SIGKILL."""

    interrupt_wait: float = 10.0
    terminate_wait: float = 5.0

    @classmethod
    def within(cls, seconds: float) -> StopPolicy:
        """Two thirds of ``seconds`` for the encoder to finish after SIGINT, a third after SIGTERM."""
        return cls(interrupt_wait=seconds * 2 / 3, terminate_wait=seconds / 3)

    @property
    def worst_case(self) -> float:
        return self.interrupt_wait + self.terminate_wait


@attrs.define
class EncoderWatch:
    """What we learned from a running encoder; readable even after a cancel."""

    on_progress: Callable[[ProgressSnapshot], None] = lambda snapshot: None
    # Called once the encoder process runs (its pid is set).
    on_start: Callable[[], None] = lambda: None
    pid: int | None = None
    returncode: int | None = None
    last_progress: ProgressSnapshot | None = None
    # Stopped because its output did not advance for the stall timeout.
    stalled: bool = False
    _stderr: collections.deque[str] = attrs.field(
        factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def add_stderr_line(self, line: str) -> None:
        self._stderr.append(line)

    def add_progress(self, snapshot: ProgressSnapshot) -> None:
        self.last_progress = snapshot
        self.on_progress(snapshot)


async def stop_process_group(policy: StopPolicy, process: trio.Process) -> None:
    """Ask, then insist, on the whole process group; trio cancels us once it exits."""
    for sig, wait in (
        (signal.SIGINT, policy.interrupt_wait),
        (signal.SIGTERM, policy.terminate_wait),
        (signal.SIGKILL, 0.0),
    ):
        log.debug("stopping encoder pid %d with %s", process.pid, sig.name)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        await trio.sleep(wait)


async def run_encoder(
    argv: list[str],
    watch: EncoderWatch,
    *,
    cwd: Path,
    stop: StopPolicy,
    guardian: Guardian | None = None,
    stall_timeout: float = 0.0,
) -> int:
    """Run ``argv`` to its end and return its exit code.

    Progress (``-progress pipe:1`` on stdout) and the stderr tail go into
    ``watch`` as they arrive. When the output has not advanced for
    ``stall_timeout`` seconds (0: never), the encoder is stopped per ``stop``,
    ``watch.stalled`` is set and its exit code returned. On cancel the
    process group is stopped per ``stop`` and this returns only once the
    encoder has exited, then raises Cancelled. ``guardian`` kills the process
    group should the agent die first.
    """
    stall = StallDetector(timeout=stall_timeout, since=trio.current_time())
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(run_child, argv, guardian=guardian, stop=partial(stop_process_group, stop), cwd=cwd)
        )
        watch.pid = process.pid
        watch.on_start()
        log.debug("encoder started, pid %d: %s", process.pid, " ".join(argv))
        # Only the stall deadline cancels this scope; the caller's cancels come from outside it.
        nursery.cancel_scope.deadline = stall.deadline
        nursery.start_soon(_read_progress, process.stdout, watch, stall, nursery.cancel_scope)
        nursery.start_soon(_read_stderr, process.stderr, watch)
    if nursery.cancel_scope.cancelled_caught:
        watch.stalled = True
        log.warning("encoder pid %d made no progress for %gs; stopped", process.pid, stall_timeout)
    watch.returncode = await process.wait()
    return watch.returncode


async def _read_progress(
    stream: trio.abc.ReceiveStream | None, watch: EncoderWatch, stall: StallDetector, scope: trio.CancelScope
) -> None:
    assert stream is not None
    parser = ProgressParser()
    async for chunk in stream:
        for snapshot in parser.feed(chunk):
            watch.add_progress(snapshot)
            if stall.observe(snapshot, trio.current_time()):
                scope.deadline = stall.deadline


async def _read_stderr(stream: trio.abc.ReceiveStream | None, watch: EncoderWatch) -> None:
    assert stream is not None
    pending = b""
    async for chunk in stream:
        *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            if line.strip():
                watch.add_stderr_line(line.decode(errors="replace"))
    if pending.strip():
        watch.add_stderr_line(pending.decode(errors="replace"))
