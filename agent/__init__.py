"""ffrtmp-agent: a distributed video transcoding master, worker agent and CLI."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

__all__ = ["__version__"]


def _version() -> str:
    """The installed distribution's version; from a checkout that is not installed, pyproject.toml's."""
    try:
        return importlib.metadata.version("ffrtmp-agent")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


__version__ = _version()
