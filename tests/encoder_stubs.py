"""Stand-ins for FFmpeg, for tests about dispatch rather than encoding, or that inject a fault.

Each stub is a small Python script given to the agent with ``--ffmpeg``. It
appends one line per encode to a journal (``<time> <output path>``), so a test
can see which jobs were encoded, how often, and when the encoder started.
Test-input generation (``-f lavfi``) just writes its output file; a probe of
a hardware encoder fails, as on a machine without one; any other call exits 0.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import attrs

_SCRIPT = """\
#!{python}
import os, sys, time
argv = sys.argv[1:]
started = time.time()
if any(arg.endswith(("_nvenc", "_qsv", "_vaapi")) for arg in argv):
    sys.exit("no hardware encoders in this stub")
if "-progress" not in argv:
    if "lavfi" in argv and argv[-1] != "-":
        open(argv[-1], "wb").write(b"input")
    sys.exit(0)
output = argv[-1]
with open({journal!r}, "a") as journal:
    journal.write(f"{{started:.6f}} {{output}}\\n")
attempts = sum(1 for _ in open({journal!r}))
{behaviour}
"""

_SUCCEED = """\
open(output, "wb").write(b"encoded")
print("frame=1\\nout_time_us=200000\\nprogress=end", flush=True)
"""

_FAIL = """\
print(f"boom: attempt {attempts} failed", file=sys.stderr, flush=True)
sys.exit(1)
"""

_HANG = """\
time.sleep(3600)
"""

_STALL = """\
print("frame=5\\nout_time_us=200000\\nprogress=continue", flush=True)
time.sleep(3600)
"""

_PROGRESS = """\
for block in range(1, BLOCKS + 1):
    time.sleep(0.2)
    print(f"frame={block * 5}\\nfps=25.0\\ntotal_size={block * 1000}\\nout_time_us={block * 200000}", flush=True)
    print("progress=continue", flush=True)
open(output, "wb").write(b"encoded")
print("progress=end", flush=True)
"""


@attrs.frozen
class EncoderStub:
    """A stub script and its journal."""

    path: Path
    journal: Path

    @property
    def entries(self) -> list[tuple[float, str]]:
        """``(start time, output path)`` per encode, in the order they started."""
        if not self.journal.exists():
            return []
        lines = self.journal.read_text().splitlines()
        return [(float(start), output) for start, output in (line.split(" ", 1) for line in lines)]


def _write(directory: Path, name: str, behaviour: str) -> EncoderStub:
    directory.mkdir(parents=True, exist_ok=True)
    journal = directory / f"{name}.journal"
    path = directory / f"{name}.py"
    path.write_text(_SCRIPT.format(python=sys.executable, journal=str(journal), behaviour=behaviour))
    path.chmod(0o755)
    return EncoderStub(path=path, journal=journal)


def succeeding(directory: Path) -> EncoderStub:
    """Writes the output file and reports ``progress=end`` at once: a job takes milliseconds."""
    return _write(directory, "succeeding", _SUCCEED)


def failing(directory: Path) -> EncoderStub:
    """Exits 1 with ``boom: attempt N failed`` on stderr, N counting every encode so far."""
    return _write(directory, "failing", _FAIL)


def flaky(directory: Path, failures: int) -> EncoderStub:
    """Fails as :func:`failing` does for the first ``failures`` encodes, then succeeds as :func:`succeeding`."""
    return _write(directory, "flaky", f"if attempts <= {failures}:\n{textwrap.indent(_FAIL, '    ')}{_SUCCEED}")


def hanging(directory: Path) -> EncoderStub:
    """Never finishes on its own: for cancels and timeouts."""
    return _write(directory, "hanging", _HANG)


def progressing(directory: Path, seconds: float) -> EncoderStub:
    """Reports progress five times a second for ``seconds`` (5 frames, 1000 bytes and 0.2 s of output each, 25 fps), then succeeds."""
    return _write(directory, "progressing", _PROGRESS.replace("BLOCKS", str(max(1, round(seconds * 5)))))


def sleeping(directory: Path, seconds: float) -> EncoderStub:
    """Reports no progress for ``seconds``, then succeeds: a job whose end the agent cannot foresee."""
    return _write(directory, "sleeping", f"time.sleep({seconds!r})\n{_SUCCEED}")


def stalling(directory: Path) -> EncoderStub:
    """Reports one block of progress, then hangs without another: a stalled encoder."""
    return _write(directory, "stalling", _STALL)
