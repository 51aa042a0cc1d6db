"""Where a process spends its CPU: py-spy samples it, and the samples are split by the functions on their stack.

A benchmark that wants to know how much of a process's CPU a few functions
take (and so how much is left when they cost nothing) samples the process
while it works (:func:`sampled`) and counts the samples that have one of the
functions on their stack (:func:`count_under`). py-spy pauses the process
for each sample, so that every stack is read whole: sampled without pausing,
a quarter of the samples went missing and the master's route handlers came
out at 27% of the rest against 43% paused. Pausing slows the process a
little, so a sampled run's rates are not figures to quote. Only running
stacks are sampled, not idle threads.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

__all__ = ["SamplingError", "Samples", "count_under", "py_spy", "sampled"]

# Samples a second: enough for shares within a percent or two over a few seconds.
RATE_HZ = 250


class SamplingError(Exception):
    """py-spy is missing, or could not sample the process; the message says what to do."""


@attrs.frozen
class Samples:
    """How many samples there were, and how many had one of the chosen functions on their stack."""

    total: int
    under: int

    @property
    def share(self) -> float:
        return self.under / self.total if self.total else 0.0


def py_spy() -> str:
    """The py-spy beside this Python (a virtual environment's), or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SamplingError("py-spy is not installed: pip install py-spy (it comes with the [bench] extra)")
    return found


@asynccontextmanager
async def sampled(pid: int, seconds: float, raw: Path) -> AsyncIterator[None]:
    """py-spy samples process ``pid`` for ``seconds`` from the start of the block; its stacks go to ``raw``.

    The block should run about as long; leaving it waits for py-spy to end.
    Raises :class:`SamplingError` when py-spy is missing or failed.
    """
    command = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
               "--rate", str(RATE_HZ), "--format", "raw", "--output", str(raw)]
    said = raw.with_suffix(".log")
    with said.open("wb") as output:
        process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    try:
        yield
        await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
    if process.returncode != 0 or not raw.exists():
        lines = said.read_text(errors="replace").strip().splitlines()
        raise SamplingError(
            f"py-spy could not sample process {pid}: {lines[-1] if lines else f'exit {process.returncode}'} "
            "(py-spy needs to trace the process: run as the same user with ptrace allowed, or as root)"
        )


def count_under(raw: Path, functions: Collection[str], module: str) -> Samples:
    """Samples in ``raw``, and those with one of ``functions`` (a bare or ``Class.`` name) of ``module`` on their stack.

    ``module`` is a path suffix such as ``agent/master/app.py``; a line of
    the raw format is ``frame;frame;... count``, each frame ``name (file:line)``.
    """
    total = under = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        if any(_names_one(frame, functions, module) for frame in stack.split(";")):
            under += int(count)
    return Samples(total, under)


def _names_one(frame: str, functions: Collection[str], module: str) -> bool:
    name, _, where = frame.partition(" (")
    return name.rpartition(".")[2] in functions and where.rpartition(":")[0].endswith(module)
