"""When an encoder counts as stalled: its output stopped moving for too long.

An encoder can hang without exiting: a network input that stops sending, an
RTMP server that stops reading, a driver that never returns. Wall time alone
cannot tell that from a long job, so progress is what counts: the output
time (``out_time`` of FFmpeg's ``-progress``, the position of GStreamer's
``progressreport``) or the frame count moving. A real-time job advances its
output time at one second per second, so it never looks stalled however long
it runs. Before the first progress block the clock runs from the encoder's
start.

Plain code with the time passed in; :func:`~agent.worker.encoder.run_encoder`
moves a cancel scope's deadline to :attr:`StallDetector.deadline`.
"""

from __future__ import annotations

import math

import attrs

from agent.worker.progress import ProgressSnapshot

__all__ = ["StallDetector"]


@attrs.define
class StallDetector:
    """Tracks the last time an encoder's output advanced.

    Args:
        timeout: seconds without an advance that make a stall; 0 turns the
            check off.
        since: the clock reading of the encoder's start or its last advance.

    Example::

        stall = StallDetector(timeout=300.0, since=now())
        stall.observe(snapshot, now())
        if stall.stalled(now()): ...
    """

    timeout: float
    since: float
    _out_time: float = 0.0
    _frames: int = 0

    @property
    def deadline(self) -> float:
        """The clock reading at which the encoder is stalled unless it advances first; ``inf`` when off."""
        return self.since + self.timeout if self.timeout > 0 else math.inf

    def observe(self, snapshot: ProgressSnapshot, now: float) -> bool:
        """Take one progress block; returns True when it advanced (the deadline moved).

        A block of zeros (FFmpeg's ``N/A`` before the first packet) is no advance.
        """
        if snapshot.out_time_s <= self._out_time and snapshot.frame <= self._frames:
            return False
        self._out_time = max(self._out_time, snapshot.out_time_s)
        self._frames = max(self._frames, snapshot.frame)
        self.since = now
        return True

    def stalled(self, now: float) -> bool:
        return now >= self.deadline
