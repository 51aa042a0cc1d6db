"""A package of plain files read: one media file per rung, decoded as it is."""

from __future__ import annotations

from pathlib import Path

from .model import Reading, Track

_MEDIA_EXTENSIONS = (".mp4", ".webm")


def read_files(package: Path) -> Reading:
    """One media file per rung at the top of ``package``."""
    files = sorted(p for p in package.iterdir() if p.suffix in _MEDIA_EXTENSIONS and p.is_file())
    reading = Reading(video=[Track(p.name, p) for p in files])
    if not files:
        reading.problems.append(f"the package holds no {' or '.join(_MEDIA_EXTENSIONS)} file at its top")
    return reading
