"""What the master refuses at ``POST /jobs``: anything an agent would fail as ``user_error``.

The agent's own check (:func:`agent.scenarios.build_spec`) is the authority, so
the master runs the same code on the job it is about to store rather than a
copy of the rules. Local paths (``input``, and ``output`` beyond a file name)
depend on the worker that runs the job: each worker allows its own
directories, so the master checks only that the path is made of safe parts.
So do input URLs to private addresses, which each worker allows or refuses
(``--allow-private-inputs``).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from ..models import Job, JobRequest
from ..scenarios import JobRejected, build_spec

__all__ = ["JobRejected", "validate_request"]

# Every path is under the root, so build_spec checks a path's parts and not where it points.
_ANY_DIRECTORY = Path("/")


def validate_request(request: JobRequest) -> None:
    """Check a job request the way the agent that runs it will.

    Raises:
        JobRejected: naming the field (``scenario``, ``bitrate`` ...) and what is allowed.
    """
    probe = Job(id="validation", **attrs.asdict(request, recurse=False))
    build_spec(
        probe,
        input_dirs=(_ANY_DIRECTORY,),
        output_dir=_ANY_DIRECTORY,
        allow_private_inputs=True,
    )
