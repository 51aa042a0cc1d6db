"""The check itself: read the package, decode every rendition, compare."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .compare import DURATION_TOLERANCE_S, alignment_problems, match_rungs, rung_problems
from .dash import read_dash
from .decode import decode_audio, decode_video
from .files import read_files
from .hls import read_hls
from .model import Decoded, DecodeFailed, ExpectedRung, PackageKind, Track

if TYPE_CHECKING:
    from agent.worker.guardian import Guardian


async def check_package(
    directory: Path,
    kind: PackageKind,
    rungs: Sequence[ExpectedRung],
    *,
    ffmpeg: str,
    duration: float | None,
    audio: bool,
    guardian: Guardian | None = None,
) -> list[str]:
    """Read ``directory`` as a player would and decode every rendition; one sentence per problem.

    Args:
        directory: the package, as it will be delivered.
        kind: ``hls`` (a master playlist at its top), ``dash`` (an MPD at its
            top) or ``files`` (one ``.mp4`` or ``.webm`` per rung at its top).
        rungs: the ladder; each is matched with the rendition of its size,
            so the order of the variants in the manifest does not matter.
        ffmpeg: the binary, from :func:`~agent.worker.engines.ffmpeg.find_ffmpeg`.
        duration: the seconds every rung must last (within
            :data:`DURATION_TOLERANCE_S`); None compares them with the longest rung.
        audio: the input has audio, so the package must carry it (an HLS audio
            group every variant names, a DASH audio AdaptationSet, an audio
            stream in each file).
        guardian: kills the decodes should the agent die; None outside an agent.

    Returns:
        Problems, each naming the rung or file and what is wrong; empty when
        a player would play every rung and switch between them.

    Raises:
        Cancelled: the decode running is killed first (no orphan).

    Example::

        problems = await check_package(out, "hls", [ExpectedRung.from_spec(s) for s in specs],
                                       ffmpeg=find_ffmpeg(), duration=10.0, audio=True)
    """
    with tempfile.TemporaryDirectory(prefix="package-check-") as scratch:
        if kind == "hls":
            reading = read_hls(directory, audio)
        elif kind == "dash":
            reading = read_dash(directory, audio, Path(scratch))
        else:
            reading = read_files(directory)
        problems = reading.problems
        if problems and not reading.video:
            return problems  # no manifest to follow: every rung missing would only repeat it
        decoded: list[tuple[Track, Decoded | None]] = []
        for track in reading.video:
            result = None
            if track.playable:
                try:
                    result = await decode_video(ffmpeg, track.source, guardian)
                except DecodeFailed as exc:
                    problems.append(f"{track.label} does not decode ({exc})")
            decoded.append((track, result))
        audio_durations = []
        for track in reading.audio:
            if track.playable:
                try:
                    audio_durations.append((track, await decode_audio(ffmpeg, track.source, guardian)))
                except DecodeFailed as exc:
                    problems.append(f"the audio rendition {track.label} does not decode ({exc})")
    pairs, unmatched = match_rungs(rungs, decoded)
    problems += unmatched
    playing = [pair for pair in pairs if pair.decoded is not None]
    expected = duration if duration is not None else max(
        (pair.decoded.duration for pair in playing if pair.decoded is not None), default=0.0)
    for pair in playing:
        problems += rung_problems(pair, expected)
        if kind == "files" and audio and pair.decoded is not None and not pair.decoded.has_audio:
            problems.append(f"{pair.name} has no audio, though the input has")
    for track, seconds in audio_durations:
        if abs(seconds - expected) > DURATION_TOLERANCE_S:
            problems.append(f"the audio rendition {track.label} lasts {seconds:.2f} s, not {expected:.2f} s")
    return problems + alignment_problems(pairs)
