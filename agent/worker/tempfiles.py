"""Temporary files named for the process that writes them, and removing those a dead process left.

Files the agent builds before they are complete (a generated test input, a
result in the outbox) are written under a temporary name and renamed into
place, so a crash never leaves a half file under a final name. A crash
(SIGKILL, the OOM killer, a power cut) does leave the temporary file, so at
start the agent removes the ones whose writer is gone.

The name carries the writer's pid, because several agents may share a
directory and one must not delete a file another is still writing. A
leftover whose pid is our own is from an earlier run too (a restarted
container gets the same pid), as nothing is written before the clean-up.
A leftover whose pid a new, unrelated process has taken waits until that
process ends; it is only disk space.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from pathlib import Path

__all__ = ["remove_stale_temporaries", "temporary_for"]

log = logging.getLogger(__name__)

_SUFFIX = ".partial"
# ".<final name>.<pid>-<random hex>.partial"
_TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]+" + re.escape(_SUFFIX) + "$")


def temporary_for(final: Path) -> Path:
    """A hidden sibling of ``final`` for this process to write, then rename into place.

    Example::

        temporary = temporary_for(final)
        temporary.write_bytes(data)
        os.replace(temporary, final)
    """
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files in ``directory`` whose writer is no longer running; returns them.

    Call before this process writes any temporary file there. A missing
    directory has none.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            match = _TEMPORARY.match(path.name)
            if match is None or _alive(int(match[1])):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        log.info("Removed %d partial file(s) left in %s by a stopped agent", len(removed), directory)
    return removed
