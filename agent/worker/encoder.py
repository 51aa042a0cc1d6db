"""Runs one encoder process and stops it the way encoders like to be stopped.

The encoder gets a session (process group) of its own, so that a stop reaches
every process it started. Stopping asks first — SIGINT makes ffmpeg write the
trailer, so a stopped job still leaves a playable file — then insists with
SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
from functools import partial
from pathlib import Path
from typing import Callable

import attrs
import trio

from agent.worker.guardian import Guardian
from agent.worker.progress import ProgressParser, ProgressSnapshot

log = logging.getLogger(__name__)

# Enough of stderr to show why an encoder failed, small enough for a JSON result.
STDERR_TAIL_LINES = 40

# Variables an encoder may need; everything else (API keys above all) stays out.
ENV_PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH")


@attrs.define
class StopPolicy:
    """Seconds to wait after SIGINT, then after SIGTERM, before SIGKILL."""

    interrupt_wait: float = 10.0
    terminate_wait: float = 5.0

    @property
    def worst_case(self) -> float:
        return self.interrupt_wait + self.terminate_wait


@attrs.define
class EncoderWatch:
    """What we learned from a running encoder; readable even after a cancel."""

    on_progress: Callable[[ProgressSnapshot], None] = lambda snapshot: None
    pid: int | None = None
    returncode: int | None = None
    last_progress: ProgressSnapshot | None = None
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


def encoder_env() -> dict[str, str]:
    return {name: os.environ[name] for name in ENV_PASSTHROUGH if name in os.environ}


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
    argv: list[str], watch: EncoderWatch, *, cwd: Path, stop: StopPolicy, guardian: Guardian | None = None
) -> int:
    """Run ``argv`` to its end and return its exit code.

    Progress (``-progress pipe:1`` on stdout) and the stderr tail go into
    ``watch`` as they arrive. On cancel the process group is stopped per
    ``stop`` and this returns only once the encoder has exited, then raises
    Cancelled. ``guardian`` kills the process group should the agent die first.
    """
    try:
        return await _run_encoder(argv, watch, cwd=cwd, stop=stop, guardian=guardian)
    finally:
        if guardian is not None and watch.pid is not None:
            with trio.CancelScope(shield=True):
                await guardian.release(watch.pid)


async def _run_encoder(
    argv: list[str], watch: EncoderWatch, *, cwd: Path, stop: StopPolicy, guardian: Guardian | None
) -> int:
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                start_new_session=True,
                cwd=cwd,
                env=encoder_env(),
                deliver_cancel=partial(stop_process_group, stop),
            )
        )
        watch.pid = process.pid
        log.debug("encoder started, pid %d: %s", process.pid, " ".join(argv))
        if guardian is not None:
            await guardian.watch(process.pid)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(_read_progress, process.stdout, watch)
        nursery.start_soon(_read_stderr, process.stderr, watch)
    # run_process has reaped it: wait() returns the exit code at once, typed as int.
    watch.returncode = await process.wait()
    return watch.returncode


async def _read_progress(stream: trio.abc.ReceiveStream, watch: EncoderWatch) -> None:
    parser = ProgressParser()
    async for chunk in stream:
        for snapshot in parser.feed(chunk):
            watch.add_progress(snapshot)


async def _read_stderr(stream: trio.abc.ReceiveStream, watch: EncoderWatch) -> None:
    pending = b""
    async for chunk in stream:
        *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            if line.strip():
                watch.add_stderr_line(line.decode(errors="replace"))
    if pending.strip():
        watch.add_stderr_line(pending.decode(errors="replace"))
