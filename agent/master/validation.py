"""What the master refuses at ``POST /jobs``: anything an agent would fail as ``user_error``.

The agent's own check (:func:`agent.scenarios.build_spec`) is the authority, so
the master runs the same code on the job it is about to store rather than a
copy of the rules. Two things depend on the worker that runs the job, and the
master leaves them to it:

* local paths (``input``, and ``output`` beyond a file name): each worker
  allows its own directories, so the master checks only that the path is
  made of safe parts;
* a hardware encoder (``codec: h264_nvenc``): only a GPU node offers it and
  checks it; the master checks the rest of the job with the plain codec.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from ..models import Job, JobRequest
from ..scenarios import JobRejected, build_spec
from .scheduler import HARDWARE_CODECS

__all__ = ["JobRejected", "validate_request"]

# Every path is under the root, so build_spec checks a path's parts and not where it points.
_ANY_DIRECTORY = Path("/")
_HARDWARE_CODEC = re.compile(rf"^(h264|h265|hevc|vp9)_({'|'.join(HARDWARE_CODECS)})$", re.IGNORECASE)


def _plain_codec(parameters: dict[str, Any]) -> dict[str, Any]:
    codec = parameters.get("codec")
    match = _HARDWARE_CODEC.fullmatch(codec) if isinstance(codec, str) else None
    return parameters if match is None else {**parameters, "codec": match[1]}


def validate_request(request: JobRequest) -> None:
    """Check a job request the way the agent that runs it will.

    Raises:
        JobRejected: naming the field (``scenario``, ``bitrate`` ...) and what is allowed.
    """
    probe = Job(id="validation", **attrs.asdict(request, recurse=False))
    build_spec(
        attrs.evolve(probe, parameters=_plain_codec(probe.parameters)),
        input_dirs=(_ANY_DIRECTORY,),
        output_dir=_ANY_DIRECTORY,
    )
