"""Whose fault is a failed job: the job's own (``user_error``) or this worker's.

A job whose input is missing, unreadable, not media, refused by its server
with a 4xx, or whose parameters the encoder refuses fails the same way on
every worker: retrying it wastes attempts, and counting it against the node
would let one submitter pause every agent's circuit breaker. Such failures
are ``user_error``: final at the master, neutral for the breaker.

Anything not *clearly* the job's fault stays ``runtime_error`` (retried,
counted): a crash, a refused connection, a 5xx, a full disk, an output that
cannot be written. A wrong guess that way costs a retry; the other way it
would drop a good job for good.

The patterns are FFmpeg's own messages (see ``tests/unit/test_failures.py``,
which runs the real FFmpeg to get them). FFmpeg 6 and later write
``Error opening input: <reason>``; earlier versions write ``<input>: <reason>``,
so the input as given to FFmpeg is needed to read those.
"""

from __future__ import annotations

import os
import re
import stat

__all__ = ["input_file_problem", "job_fault"]

# Why FFmpeg could not open an input, when that is the input's own fault.
_INPUT_REASONS = (
    r"No such file or directory|Permission denied|Is a directory|Invalid data found when processing input"
    r"|Server returned 4(?:\d\d|XX)\b.*"
)
_INPUT_ADVICE = "the job's input cannot be used; check that it exists, is readable and holds video"

# (pattern over one stderr line, what the submitter should do), first match wins.
_RULES: tuple[tuple[str, str], ...] = (
    (rf"Error opening input: (?:{_INPUT_REASONS})$", _INPUT_ADVICE),
    (r"\bHTTP error 4\d\d\b", "the input URL answered with a client error; check the URL and its access rights"),
    (r"^Stream map '[^']*' matches no streams", "the input has no video stream; give an input with video"),
    (
        r"Error while opening encoder",
        "the encoder refused the job's parameters; change its size, frame rate, bitrate or preset",
    ),
)
_COMPILED = tuple((re.compile(pattern), advice) for pattern, advice in _RULES)
# "[in#0 @ 0x55…] " and similar: the component that logged the line.
_PREFIX = re.compile(r"^(?:\[[^\]]*\] )+")


def job_fault(stderr: str, input_path: str = "") -> str:
    """The sentence saying how ``stderr`` shows the job's own fault, or ``""`` if it does not.

    Args:
        stderr: the tail of a failed encoder's standard error.
        input_path: the input exactly as FFmpeg was given it, to read the
            ``<input>: <reason>`` lines of FFmpeg 5 and earlier; ``""`` skips them.

    Returns:
        ``"<FFmpeg's line>: <what to do>"``, for the job's ``error``.

    Example::

        job_fault("Error opening input: No such file or directory")
        # "Error opening input: No such file or directory: the job's input cannot be used; ..."
    """
    rules = _COMPILED
    if input_path:
        rules = ((re.compile(rf"^{re.escape(input_path)}: (?:{_INPUT_REASONS})$"), _INPUT_ADVICE), *rules)
    for raw in stderr.splitlines():
        line = _PREFIX.sub("", raw.strip())
        for pattern, advice in rules:
            if pattern.search(line):
                return f"{line}: {advice}"
    return ""


def input_file_problem(path: str) -> str:
    """Why the local file ``path`` cannot be a job's input, or ``""`` when it can.

    Checked before anything starts, so that a missing file is one clear
    ``user_error`` rather than an encoder exit to decipher. A FIFO or device
    is refused too: FFmpeg would block on it, not fail.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"input file {path} does not exist on this worker; check the path, or copy the file there first"
    except OSError as exc:
        return f"input file {path} cannot be read ({exc.strerror}); check its directory's permissions"
    if not stat.S_ISREG(mode):
        return f"input {path} is not a regular file; give the path of a video file"
    if not os.access(path, os.R_OK):
        return f"input file {path} is not readable by this worker's user; check its permissions"
    return ""
