"""One full FFmpeg decode of a rendition, read from the ``showinfo`` filter's lines.

The decodes run as child processes through
:func:`~agent.worker.processes.run_child` (own session, guarded, killed on
cancel).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from agent.worker.engines.ffmpeg import LOCAL_PROTOCOLS, parse_media_info
from agent.worker.processes import STDERR_TAIL_LINES, run_child
from agent.worker.progress import ProgressParser

from .model import Decoded, DecodeFailed

if TYPE_CHECKING:
    from agent.worker.guardian import Guardian

# FFmpeg's decoder names for the scenario codecs.
_DECODED_CODEC = {"h264": "h264", "hevc": "h265", "vp9": "vp9", "av1": "av1"}

_SHOWINFO = re.compile(r"\bpts_time:\s*(-?\d+(?:\.\d+)?)\s.*?duration_time:\s*(\d+(?:\.\d+)?).*?\biskey:([01])")
_PROFILE = re.compile(r"Video: [\w-]+ \(([^)]+)\)")


@attrs.define
class _DecodeLog:
    """FFmpeg's stderr for one decode, read line by line: the header and every frame's time and key flag."""

    header: list[str] = attrs.field(factory=list)
    in_header: bool = True
    frames: int = 0
    first: float | None = None
    end: float = 0.0
    key_times: list[float] = attrs.field(factory=list)
    tail: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))

    def feed(self, line: str) -> None:
        if self.in_header:
            self.in_header = not line.startswith("Stream mapping:")
            self.header.append(line)
        if match := _SHOWINFO.search(line):
            at = float(match[1])
            self.first = at if self.first is None else min(self.first, at)
            self.end = max(self.end, at + float(match[2]))
            self.frames += 1
            if match[3] == "1":
                self.key_times.append(at)
        elif "Parsed_showinfo" not in line:
            self.tail.append(line)

    def decoded(self) -> Decoded:
        text = "\n".join(self.header)
        info = parse_media_info(text, progress_out_time=0.0, size_bytes=0)
        if info is None:
            raise DecodeFailed("no video stream")
        profile = _PROFILE.search(text)
        first = self.first or 0.0
        return Decoded(
            codec=_DECODED_CODEC.get(info.codec, info.codec), profile=profile[1] if profile else "",
            width=info.width, height=info.height, frames=self.frames, duration=self.end - first,
            key_times=tuple(sorted(t - first for t in self.key_times)), has_audio=bool(info.audio_codec),
        )


async def _run_decode(argv: list[str], on_line: Callable[[str], None], guardian: Guardian | None) -> tuple[int, bytes]:
    """Run a decode, handing each stderr line to ``on_line``; its exit code and stdout (``-progress``)."""
    stdout = bytearray()

    async def lines(stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        pending = b""
        async for chunk in stream:
            *complete, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
            for line in complete:
                on_line(line.decode("utf-8", "replace"))
        on_line(pending.decode("utf-8", "replace"))

    async def collect(stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        async for chunk in stream:
            stdout.extend(chunk)

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(run_child, argv, guardian=guardian))
        nursery.start_soon(lines, process.stderr)
        nursery.start_soon(collect, process.stdout)
    return await process.wait(), bytes(stdout)


def _decode_argv(ffmpeg: str, source: Path, stream: str, filters: Sequence[str]) -> list[str]:
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-xerror", "-protocol_whitelist", LOCAL_PROTOCOLS, "-i", str(source),
        "-map", f"0:{stream}:0", *filters, "-progress", "pipe:1", "-nostats", "-f", "null", "-",
    ]


def _failure(returncode: int, tail: Iterable[str]) -> DecodeFailed:
    lines = [line for line in tail if line.strip()]
    return DecodeFailed(f"ffmpeg exit code {returncode}: {lines[-1].strip() if lines else 'no output'}")


async def decode_video(ffmpeg: str, source: Path, guardian: Guardian | None) -> Decoded:
    """Decode the first video stream of ``source`` in full.

    Raises:
        DecodeFailed: FFmpeg stopped on an error, or found no video.
    """
    log = _DecodeLog()
    argv = _decode_argv(ffmpeg, source, "v", ["-vf", "showinfo=checksum=0"])
    returncode, _ = await _run_decode(argv, log.feed, guardian)
    if returncode != 0:
        raise _failure(returncode, log.tail)
    return log.decoded()


async def decode_audio(ffmpeg: str, source: Path, guardian: Guardian | None) -> float:
    """Decode the first audio stream of ``source`` in full; its duration in seconds.

    Raises:
        DecodeFailed: FFmpeg stopped on an error, or found no audio.
    """
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    returncode, stdout = await _run_decode(_decode_argv(ffmpeg, source, "a", []), tail.append, guardian)
    if returncode != 0:
        raise _failure(returncode, tail)
    progress = ProgressParser()
    progress.feed(stdout + b"\n")
    return progress.latest.out_time_s if progress.latest is not None else 0.0
