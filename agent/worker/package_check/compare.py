"""Decoded rungs compared with the ladder, with what the manifest declares, and with one another."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from .model import VIDEO_CODECS, Declared, Decoded, ExpectedRung, Track

# How far a rung's (or the audio's) duration may be from the expected one:
# more than the frame or two the fps filter adds or drops at the ends, or
# AAC's priming, and less than one segment (2 s keyframe interval), so a rung
# that lost a segment fails.
DURATION_TOLERANCE_S = 0.5
# Apple's media stream validator's margin between declared and measured bitrates.
BANDWIDTH_TOLERANCE = 0.10
# A decoded frame rate may differ from the rung's by this share: the average
# over a whole rung is exact unless frames were dropped or duplicated.
FPS_TOLERANCE = 0.02

# H.264 profile names FFmpeg prints -> profile_idc, the first byte of an avc1.PPCCLL codec string.
_H264_PROFILE_IDC = {
    "Baseline": 0x42, "Constrained Baseline": 0x42, "Main": 0x4D, "Extended": 0x58, "High": 0x64,
    "High 10": 0x6E, "High 4:2:2": 0x7A, "High 4:4:4 Predictive": 0xF4,
}


@attrs.frozen
class Pair:
    """A rung of the ladder and the rendition of the package that plays it (None: not decodable)."""

    rung: ExpectedRung
    track: Track
    decoded: Decoded | None

    @property
    def name(self) -> str:
        return f"{self.rung.name} ({self.track.label})"


def match_rungs(
    rungs: Sequence[ExpectedRung], tracks: Sequence[tuple[Track, Decoded | None]],
) -> tuple[list[Pair], list[str]]:
    """Each rung paired with the rendition of its size (decoded, else declared); problems for the left-overs."""
    left = list(tracks)
    pairs, problems = [], []
    for rung in rungs:
        for index, (track, decoded) in enumerate(left):
            size = decoded.size if decoded is not None else track.declared.size if track.declared else None
            if size == rung.size:
                pairs.append(Pair(rung, track, decoded))
                del left[index]
                break
        else:
            problems.append(f"no rendition in the package plays {rung.name} ({rung.width}x{rung.height})")
    ladder = ", ".join(f"{r.width}x{r.height}" for r in rungs)
    for track, decoded in left:
        if decoded is not None:
            problems.append(
                f"{track.label} decodes as {decoded.width}x{decoded.height}, which is no rung of the ladder ({ladder})"
            )
    return pairs, problems


def rung_problems(pair: Pair, duration: float) -> list[str]:
    """A decoded rung against the ladder and against its manifest."""
    decoded, rung, declared = pair.decoded, pair.rung, pair.track.declared
    assert decoded is not None
    problems = []
    if decoded.codec != rung.codec:
        problems.append(f"{pair.name} is {decoded.codec}, not {rung.codec}")
    if abs(decoded.fps - rung.fps) > FPS_TOLERANCE * rung.fps:
        problems.append(f"{pair.name} plays at {decoded.fps:.3f} frames/s, not {rung.fps:g}")
    if abs(decoded.duration - duration) > DURATION_TOLERANCE_S:
        problems.append(f"{pair.name} lasts {decoded.duration:.2f} s, not {duration:.2f} s like the others")
    if declared is not None:
        problems += _declared_problems(pair.name, declared, decoded)
    return problems


def _declared_problems(name: str, declared: Declared, decoded: Decoded) -> list[str]:
    problems = []
    if declared.size is not None and declared.size != decoded.size:
        problems.append(
            f"{declared.where} declares {name} as {declared.width}x{declared.height}, "
            f"but it decodes as {decoded.width}x{decoded.height}"
        )
    if declared.fps is not None and abs(declared.fps - decoded.fps) > FPS_TOLERANCE * decoded.fps:
        problems.append(f"{declared.where} declares {name} at {declared.fps:g} frames/s, but it plays at "
                        f"{decoded.fps:.3f}")
    if declared.codecs:
        problems += _codecs_problems(name, declared, decoded)
    problems += _bandwidth_problems(name, declared)
    return problems


def _codecs_problems(name: str, declared: Declared, decoded: Decoded) -> list[str]:
    video = [c.strip() for c in declared.codecs.split(",") if c.strip()[:4] in VIDEO_CODECS]
    if len(video) != 1 or VIDEO_CODECS[video[0][:4]] != decoded.codec:
        return [f"{declared.where} declares CODECS {declared.codecs!r} for {name}, which decodes as {decoded.codec}; "
                "players may refuse it"]
    idc = _H264_PROFILE_IDC.get(decoded.profile)
    declared_idc = video[0][5:7]
    if decoded.codec == "h264" and idc is not None and declared_idc.lower() != f"{idc:02x}":
        return [f"{declared.where} declares {video[0]} for {name}, but its H.264 profile is {decoded.profile} "
                f"(avc1.{idc:02x}....); players may refuse it"]
    return []


def _bandwidth_problems(name: str, declared: Declared) -> list[str]:
    measured = declared.measured
    if measured is None or declared.bandwidth is None:
        return []
    problems = []
    if declared.bandwidth < measured.peak * (1 - BANDWIDTH_TOLERANCE):
        problems.append(
            f"{declared.where} declares BANDWIDTH={declared.bandwidth} for {name}, but its busiest segment "
            f"(with audio) needs {measured.peak:.0f} bit/s; players would pick it on links too slow for it"
        )
    average = declared.average_bandwidth
    if average is not None and abs(average - measured.average) > BANDWIDTH_TOLERANCE * measured.average:
        problems.append(
            f"{declared.where} declares AVERAGE-BANDWIDTH={average} for {name}, but it averages "
            f"{measured.average:.0f} bit/s (with audio)"
        )
    return problems


def _first_difference(ours: Sequence[float], theirs: Sequence[float], tolerance: float) -> tuple[str, str] | None:
    """The first time in one list and not in the other (as text, ``-`` for nothing), or None if they match."""
    for index in range(max(len(ours), len(theirs))):
        mine = ours[index] if index < len(ours) else None
        other = theirs[index] if index < len(theirs) else None
        if mine is None or other is None or abs(mine - other) > tolerance:
            return (f"{mine:.3f} s" if mine is not None else "none",
                    f"{other:.3f} s" if other is not None else "none")
    return None


def _misaligned(
    decoded: Sequence[tuple[Pair, Decoded]], times: Callable[[Pair, Decoded], Sequence[float]], tolerance: float,
) -> list[tuple[Pair, Pair, tuple[str, str]]]:
    """Each rung whose ``times`` differ from the first rung's over the time both last, with the first difference."""
    if not decoded:
        return []
    (reference, first), *others = decoded
    found = []
    for pair, mine in others:
        within = min(mine.duration, first.duration) - tolerance
        difference = _first_difference([t for t in times(pair, mine) if t < within],
                                        [t for t in times(reference, first) if t < within], tolerance)
        if difference is not None:
            found.append((pair, reference, difference))
    return found


def alignment_problems(pairs: Sequence[Pair]) -> list[str]:
    """Keyframes at the same times in every rung; every segment starting on a keyframe, at the same time in all.

    Times may differ by up to half a frame of the fastest rung: the same
    frame, written with each rung's time base. Two rungs are compared over
    the time both last, so a short rung is reported once, for its duration.
    """
    decoded = [(pair, pair.decoded) for pair in pairs if pair.decoded is not None]
    if not decoded:
        return []
    tolerance = 0.5 / max(pair.rung.fps for pair, _ in decoded)
    problems = [
        f"keyframes of {pair.name} are not aligned with {reference.name}: the first differing keyframe is at "
        f"{ours} against {theirs}; players switch rungs only at shared keyframes, so encode every rung with "
        "the same fixed keyframe interval"
        for pair, reference, (ours, theirs) in _misaligned(decoded, lambda _, d: d.key_times, tolerance)
    ]
    for pair, mine in decoded:
        for index, start in enumerate(pair.track.segment_starts()):
            if not any(abs(start - key) <= tolerance for key in mine.key_times):
                problems.append(f"segment {index + 1} of {pair.name} starts at {start:.3f} s, which is not a keyframe; "
                                "players cannot start decoding there")
                break
    segmented = [(pair, mine) for pair, mine in decoded if pair.track.segments]
    problems += [
        f"segment boundaries of {pair.name} are not aligned with {reference.name}: a segment starts at {ours} "
        f"against {theirs}; players switch rungs at segment boundaries"
        for pair, reference, (ours, theirs) in _misaligned(segmented, lambda p, _: p.track.segment_starts(), tolerance)
    ]
    return problems
