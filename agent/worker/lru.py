"""Bounding a directory of cached files: least recently used out first.

The generated-input cache (:mod:`.inputs`) and the artefact cache
(:mod:`.artifacts`) keep files any later job may reuse; both mark a file's
use by its modification time and call :func:`evict_least_recent` after adding one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Container, Iterable
from pathlib import Path

__all__ = ["evict_least_recent"]

log = logging.getLogger(__name__)


def evict_least_recent(files: Iterable[Path], max_bytes: int, held: Container[str], what: str) -> None:
    """Delete files, least recently used first, until the rest fit ``max_bytes``.

    Args:
        files: the cache's files; one deleted meanwhile by another agent is skipped.
        max_bytes: the bound of their total size.
        held: names of files a job of this agent is reading: they stay, even past the bound.
        what: how the log calls a file ("test input", "artifact").
    """
    found = []
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            found.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in found)
    for _, size, path in sorted(found):
        if total <= max_bytes:
            break
        if path.name in held:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info("evicted %s %s (%d bytes) to keep the cache under %d bytes", what, path.name, size, max_bytes)
        total -= size
