"""The encoders the agent drives (FFmpeg, GStreamer, hardware through FFmpeg), and what they share."""

from __future__ import annotations

__all__ = ["KEYFRAME_INTERVAL_S", "keyframe_interval"]

# Two seconds between keyframes: players and RTMP servers can join a stream
# that often, and it costs little compression. Both engines use it, so their
# streams join alike.
KEYFRAME_INTERVAL_S = 2.0


def keyframe_interval(fps: float) -> int:
    """Frames from one keyframe to the next at ``fps``; at least one."""
    return max(1, round(fps * KEYFRAME_INTERVAL_S))
