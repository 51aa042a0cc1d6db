"""When an encoder counts as stalled, with the time passed in (agent/worker/stall.py)."""

from __future__ import annotations

import math

from agent.worker.progress import ProgressSnapshot
from agent.worker.stall import StallDetector


def test_an_encoder_without_any_progress_stalls_a_timeout_after_its_start() -> None:
    """Before the first progress block the clock runs from the start."""
    stall = StallDetector(timeout=5, since=100)
    assert not stall.stalled(104.9)
    assert stall.stalled(105)


def test_advancing_output_time_moves_the_deadline() -> None:
    """Each block with a later out_time starts the timeout again."""
    stall = StallDetector(timeout=5, since=0)
    for second in range(1, 20):
        assert stall.observe(ProgressSnapshot(out_time_s=second), now=second)
        assert not stall.stalled(second + 4.9)
    assert stall.deadline == 24


def test_a_growing_frame_count_alone_is_progress() -> None:
    """An encoder whose out_time is N/A still advances by frames."""
    stall = StallDetector(timeout=5, since=0)
    assert stall.observe(ProgressSnapshot(frame=10), now=4)
    assert stall.deadline == 9


def test_repeated_blocks_without_an_advance_do_not_move_the_deadline() -> None:
    """Blocks keep coming while the output stands still: that is a stall, not progress."""
    stall = StallDetector(timeout=5, since=0)
    stall.observe(ProgressSnapshot(frame=30, out_time_s=1.0), now=1)
    for now in range(2, 7):
        assert not stall.observe(ProgressSnapshot(frame=30, out_time_s=1.0), now=now)
    assert stall.stalled(6)


def test_a_block_of_zeros_is_no_progress() -> None:
    """FFmpeg's N/A fields before the first packet read as zero and do not count."""
    stall = StallDetector(timeout=5, since=0)
    assert not stall.observe(ProgressSnapshot(), now=3)
    assert stall.stalled(5)


def test_a_zero_timeout_never_stalls() -> None:
    """0 turns the check off."""
    stall = StallDetector(timeout=0, since=0)
    assert stall.deadline == math.inf
    assert not stall.stalled(1e9)
