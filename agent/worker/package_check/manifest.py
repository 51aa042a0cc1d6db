"""What the HLS and DASH readers share: the files a manifest names, and the numbers it gives."""

from __future__ import annotations

import math
from pathlib import Path


def _fetchable(package: Path, base: Path, reference: str) -> Path | None:
    """``reference`` (relative to ``base``) as a path, or None if it leaves the package: a URL, ``..``, absolute."""
    if "://" in reference or reference.startswith("/"):
        return None
    path = (base / reference).resolve()
    return path if path.is_relative_to(package.resolve()) else None


def locate(package: Path, where: str, base: Path, reference: str) -> Path | str:
    """The file a manifest names, if there and not empty; else why a player could not fetch it."""
    path = _fetchable(package, base, reference)
    if path is None:
        return f"{where} names {reference!r}, which is not a file inside the package; players could not fetch it"
    if not path.is_file():
        return f"{where} names {reference!r}, which is missing from the package"
    if path.stat().st_size == 0:
        return f"{where} names {reference!r}, which is empty"
    return path


def number_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def int_or_none(text: str | None) -> int | None:
    value = number_or_none(text)
    return int(value) if value is not None and value == int(value) else None
