"""Parsing FFmpeg's -progress output (agent/worker/progress.py)."""

from __future__ import annotations

import pytest

from agent.worker.progress import MAX_LINE_BYTES, ProgressParser, ProgressSnapshot, percent

# Written by FFmpeg 9.0.2 for `-re -i in.mp4 -c:v libvpx-vp9 -progress pipe:1 -nostats out.webm`:
# the first block comes before any packet is written, so most values are N/A.
VP9_SAMPLE = b"""frame=0
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=0
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
frame=30
fps=0.00
stream_0_0_q=44.0
bitrate= 755.0kbits/s
total_size=94373
out_time_us=1000000
out_time_ms=1000000
out_time=00:00:01.000000
dup_frames=0
drop_frames=0
speed=1.98x
progress=end
"""

# Same version, `-re -f lavfi -i testsrc2 -t 1.2 -stats_period 0.4 -c:v libx264 ...`: padded values.
X264_SAMPLE = b"""frame=19
fps=0.00
stream_0_0_q=26.0
bitrate=   0.5kbits/s
total_size=48
out_time_us=760000
out_time_ms=760000
out_time=00:00:00.760000
dup_frames=0
drop_frames=0
speed= 1.9x
progress=continue
frame=30
fps=0.00
stream_0_0_q=-1.0
bitrate= 262.6kbits/s
total_size=39386
out_time_us=1200000
out_time_ms=1200000
out_time=00:00:01.200000
dup_frames=0
drop_frames=0
speed=1.62x
progress=end
"""

VP9_EXPECTED = [
    ProgressSnapshot(frame=0, fps=0.0, bitrate_kbps=0.0, total_size=0, out_time_s=0.0, speed=0.0, done=False),
    ProgressSnapshot(
        frame=30, fps=0.0, bitrate_kbps=755.0, total_size=94373, out_time_s=1.0, speed=1.98, done=True
    ),
]
X264_EXPECTED = [
    ProgressSnapshot(frame=19, fps=0.0, bitrate_kbps=0.5, total_size=48, out_time_s=0.76, speed=1.9, done=False),
    ProgressSnapshot(
        frame=30, fps=0.0, bitrate_kbps=262.6, total_size=39386, out_time_s=1.2, speed=1.62, done=True
    ),
]


@pytest.mark.parametrize(("sample", "expected"), [(VP9_SAMPLE, VP9_EXPECTED), (X264_SAMPLE, X264_EXPECTED)])
def test_real_ffmpeg_output_gives_one_snapshot_per_block(sample: bytes, expected: list[ProgressSnapshot]) -> None:
    """Values are read as numbers, N/A as zero, and the last block is done."""
    assert ProgressParser().feed(sample) == expected


@pytest.mark.parametrize(("sample", "expected"), [(VP9_SAMPLE, VP9_EXPECTED), (X264_SAMPLE, X264_EXPECTED)])
def test_a_chunk_boundary_anywhere_gives_the_same_snapshots(sample: bytes, expected: list[ProgressSnapshot]) -> None:
    """Pipes split lines at random: cut the sample at every byte offset."""
    for cut in range(len(sample) + 1):
        parser = ProgressParser()
        assert parser.feed(sample[:cut]) + parser.feed(sample[cut:]) == expected, cut


def test_byte_by_byte_feeding_gives_the_same_snapshots() -> None:
    """The worst split of all: one byte per chunk, with empty chunks in between."""
    parser = ProgressParser()
    snapshots = []
    for i in range(len(VP9_SAMPLE)):
        snapshots += parser.feed(VP9_SAMPLE[i : i + 1])
        snapshots += parser.feed(b"")
    assert snapshots == VP9_EXPECTED


def test_windows_line_endings_and_garbage_lines_are_tolerated() -> None:
    """CRLF, lines without '=' and unknown keys do not disturb the parse."""
    data = b"hello\r\nframe=5\r\nweird_key=1\r\nout_time_us=500000\r\nprogress=continue\r\n"
    assert ProgressParser().feed(data) == [ProgressSnapshot(frame=5, out_time_s=0.5)]


def test_values_that_are_not_numbers_read_as_zero() -> None:
    """N/A, empty, inf and junk never raise."""
    data = b"frame=N/A\nfps=\nbitrate=infkbits/s\ntotal_size=abc\nspeed=N/Ax\nout_time=N/A\nprogress=continue\n"
    assert ProgressParser().feed(data) == [ProgressSnapshot()]


def test_the_clock_form_is_used_when_microseconds_are_missing_and_negatives_clamp() -> None:
    """out_time alone still gives seconds; a negative start time reads as 0."""
    parser = ProgressParser()
    [first, second] = parser.feed(
        b"out_time=01:02:03.500000\nprogress=continue\n"
        b"out_time_us=-23220\nout_time=-00:00:00.023220\nprogress=continue\n"
    )
    assert first.out_time_s == pytest.approx(3723.5)
    assert second.out_time_s == 0.0


def test_a_block_starts_afresh_after_each_progress_line() -> None:
    """A value from the previous block does not leak into the next."""
    [first, second] = ProgressParser().feed(b"frame=10\nprogress=continue\nspeed=2x\nprogress=continue\n")
    assert (first.frame, second.frame, second.speed) == (10, 0, 2.0)


def test_latest_is_the_last_completed_block() -> None:
    """Between blocks the parser still knows where the encoder was."""
    parser = ProgressParser()
    assert parser.latest is None
    parser.feed(X264_SAMPLE[: X264_SAMPLE.index(b"progress=end")])
    assert parser.latest == X264_EXPECTED[0]
    parser.feed(b"progress=end\n")
    assert parser.latest is not None and parser.latest.done


def test_an_endless_line_is_dropped_and_parsing_recovers() -> None:
    """Output without newlines cannot grow the buffer without bound."""
    parser = ProgressParser()
    assert parser.feed(b"x" * (MAX_LINE_BYTES + 1)) == []
    assert parser.feed(b"\nframe=3\nprogress=end\n") == [ProgressSnapshot(frame=3, done=True)]


@pytest.mark.parametrize(
    ("out_time_s", "duration_s", "done", "expected"),
    [
        (0.0, 10.0, False, 0.0),
        (2.5, 10.0, False, 25.0),
        (12.0, 10.0, False, 100.0),
        (5.0, 0.0, False, 0.0),
        (5.0, -1.0, False, 0.0),
        (1.0, 10.0, True, 100.0),
        (0.0, 0.0, True, 100.0),
    ],
)
def test_percent_is_clamped_and_100_when_done(
    out_time_s: float, duration_s: float, done: bool, expected: float
) -> None:
    """Progress never leaves 0..100 and a finished encode is complete."""
    snapshot = ProgressSnapshot(out_time_s=out_time_s, done=done)
    assert percent(snapshot, duration_s) == pytest.approx(expected)


# What gst-launch-1.0 1.22 prints with `progressreport update-freq=1` after an encoder.
GST_SAMPLE = b"""Setting pipeline to PLAYING ...
progressreport0 ( 0: 0: 0): Could not query position and/or duration
progressreport0 (00:00:01): 0 / 2 seconds ( 0.0 %)
progressreport0 (00:00:02): 1 / 2 seconds (50.0 %)
progressreport0 (00:00:02): 2 / 2 seconds (100.0 %)
Got EOS from element "pipeline0".
"""


def test_gstreamer_progressreport_lines_give_the_position_in_seconds() -> None:
    """One snapshot per report line; the line without a position and the rest of the log are ignored."""
    parser = ProgressParser()
    snapshots = [s for i in range(len(GST_SAMPLE)) for s in parser.feed(GST_SAMPLE[i : i + 1])]
    assert [s.out_time_s for s in snapshots] == [0.0, 1.0, 2.0]
    assert [percent(s, 2.0) for s in snapshots] == [0.0, 50.0, 100.0]
