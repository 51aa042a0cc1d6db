"""Adaptive-bitrate ladders: the ``ladder`` and ``package`` parameters, read into rungs.

A ladder job encodes one input into several renditions (rungs) and packages
them for adaptive streaming::

    --param ladder=1080p30-h264,720p30-h264@3M,480p30-h264@1200k --param package=hls

Each rung is a scenario name with an optional ``@<bitrate>``; without one it
gets the scenario's default bitrate. Every rung's keyframes fall on the same
instants (every :data:`SEGMENT_S` seconds), so that segments line up across
rungs and a player can switch between them at any segment boundary.

How the rungs are run — one FFmpeg process that decodes once and splits the
picture (``single``), or one process per rung (``split``) — is the worker's
choice (``--ladder-mode``, :func:`choose_mode`); the FFmpeg command lines are
built in :mod:`agent.worker.engines.ffmpeg_ladder`.

Plain code: nothing here starts a process or touches the network.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from .scenarios import _DEFAULT_PRESET, CODECS, JobRejected, Scenario, _bitrate, _preset, _shown, _text, default_bitrate

__all__ = [
    "LADDER_MODES",
    "MAX_RUNGS",
    "PACKAGES",
    "SEGMENT_S",
    "Ladder",
    "LadderMode",
    "Package",
    "Rung",
    "choose_mode",
]

Package = Literal["hls", "dash", "files"]
LadderMode = Literal["single", "split"]
# What a package holds: HLS (fMP4 segments, a master playlist), DASH (an MPD), or one MP4 per rung.
PACKAGES: tuple[Package, ...] = ("hls", "dash", "files")
# How the worker runs a ladder; "auto" lets it choose (see choose_mode).
LADDER_MODES = ("auto", "single", "split")
# Segment length and keyframe interval of every rung: short enough for players to switch quickly,
# the keyframe interval the single-output encodes already use.
SEGMENT_S = 2.0
# Eight rungs cover 240p to 4K; more would make one job too large for one slot.
MAX_RUNGS = 8
# HLS players expect H.264 or H.265 in fMP4 segments; DASH and plain files carry VP9 too.
_HLS_CODECS = ("h264", "h265")
# Parameters that describe one encode: with a ladder each rung says its own.
_PER_RUNG = {
    "bitrate": "give each rung's bitrate as <scenario>@<bitrate>, e.g. 720p30-h264@3M",
    "codec": "each rung's scenario names its codec, e.g. 720p30-h265",
    "fps": "each rung's scenario names its frame rate, e.g. 720p60-h264",
    "resolution": "each rung's scenario names its height, e.g. 540p30-h264",
}


@attrs.frozen
class Rung:
    """One rendition of a ladder; ``index`` counts from 1, ``text`` is the rung as the job wrote it."""

    index: int
    text: str
    width: int
    height: int
    fps: float
    codec: str
    bitrate: str

    @classmethod
    def parse(cls, index: int, text: str) -> Rung:
        """Read ``<scenario>[@<bitrate>]``.

        Example::

            >>> Rung.parse(2, "720p30-h264@3M").bitrate
            '3000k'

        Raises:
            JobRejected: field ``ladder``; the message names the rung by
                position and text: ``rung 2 (720p30-h264@abc): bitrate 'abc' must look like ...``.
        """
        name, at, bitrate = text.partition("@")
        try:
            scenario = Scenario.parse(name)
            if at and not bitrate.strip(" "):
                raise JobRejected("bitrate", "is missing after '@'; write it like 720p30-h264@3M")
            kbps = _bitrate(bitrate) if at else default_bitrate(
                scenario.width, scenario.height, scenario.fps, scenario.codec
            )
        except JobRejected as exc:
            raise JobRejected("ladder", f"rung {index} ({text}): {exc.field} {exc.reason}") from None
        return cls(index=index, text=text, width=scenario.width, height=scenario.height,
                   fps=float(scenario.fps), codec=scenario.codec, bitrate=kbps)

    @property
    def name(self) -> str:
        """Its directory (HLS) or file stem (files) in the package: ``2-720p30``, unique by the index."""
        return f"{self.index}-{self.height}p{self.fps:g}"

    @property
    def encoder(self) -> str:
        """The FFmpeg software encoder of its codec (``libx264``)."""
        return CODECS[self.codec]

    @property
    def bitrate_kbps(self) -> int:
        return int(self.bitrate[:-1])

    @property
    def keyframe_interval(self) -> int:
        """Frames from one keyframe to the next: one segment's worth, so every segment starts on one."""
        return max(1, round(self.fps * SEGMENT_S))


@attrs.frozen
class Ladder:
    """The rungs of a ladder job, in the order given, and how they are packaged; ``preset`` applies to all."""

    rungs: tuple[Rung, ...]
    package: Package = "hls"
    preset: str = _DEFAULT_PRESET

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Ladder:
        """The ladder a job's parameters describe (``ladder``, ``package``, ``preset``).

        Raises:
            JobRejected: a rung that does not parse (naming it), a repeated rung,
                more than :data:`MAX_RUNGS`, an unknown package, a codec the
                package cannot carry, a preset one rung's codec does not have, or a
                parameter that only makes sense for one encode (``bitrate``, ...).
        """
        for key, advice in _PER_RUNG.items():
            if params.get(key) is not None:
                raise JobRejected(key, f"does not apply to a ladder: {advice}")
        if str(params.get("output_mode") or "file").lower() != "file":
            raise JobRejected("output_mode", "a ladder is written as a package of files; leave output_mode out")
        if str(params.get("hardware") or "auto").lower() not in ("auto", "none"):
            raise JobRejected("hardware", "ladder rungs are encoded in software; leave hardware out")
        if params.get("ladder") is None:
            raise JobRejected("package", "needs a ladder, e.g. --param ladder=720p30-h264,480p30-h264")
        ladder = cls.parse(_text("ladder", params["ladder"], 1024), _package(params.get("package") or "hls"))
        if params.get("preset") is not None:
            # Checked against every rung's codec: x264's names and libvpx's differ.
            presets = {_preset(params["preset"], rung.codec) for rung in ladder.rungs}
            ladder = attrs.evolve(ladder, preset=presets.pop())
        return ladder

    @classmethod
    def parse(cls, text: str, package: Package = "hls") -> Ladder:
        """Read comma-separated rungs (see :meth:`Rung.parse`).

        Raises:
            JobRejected: field ``ladder``, naming the rung at fault.
        """
        parts = [part.strip(" ") for part in text.split(",")]
        if not 1 <= len(parts) <= MAX_RUNGS:
            raise JobRejected("ladder", f"has {len(parts)} rungs; give 1 to {MAX_RUNGS}, separated by commas")
        rungs: list[Rung] = []
        for index, part in enumerate(parts, start=1):
            rung = Rung.parse(index, part)
            same = next((r for r in rungs if _key(r) == _key(rung)), None)
            if same is not None:
                raise JobRejected("ladder", f"rung {index} ({part}) repeats rung {same.index} ({same.text})")
            if package == "hls" and rung.codec not in _HLS_CODECS:
                raise JobRejected(
                    "ladder", f"rung {index} ({part}): package=hls carries h264 or h265; use package=dash "
                    f"or package=files for {rung.codec}"
                )
            rungs.append(rung)
        return cls(rungs=tuple(rungs), package=package)

    @property
    def total_kbps(self) -> int:
        """The video bitrate of all rungs together."""
        return sum(rung.bitrate_kbps for rung in self.rungs)

    @property
    def encoders(self) -> str:
        """The encoders the rungs use, each once, in rung order: ``libx264`` or ``libx264,libx265``."""
        return ",".join(dict.fromkeys(rung.encoder for rung in self.rungs))


def _key(rung: Rung) -> tuple[int, int, float, str, str]:
    return rung.width, rung.height, rung.fps, rung.codec, rung.bitrate


def _package(value: Any) -> Package:
    name = _text("package", value, 16).lower()
    for package in PACKAGES:
        if name == package:
            return package
    raise JobRejected("package", f"{_shown(value)} must be one of {', '.join(PACKAGES)}")


def choose_mode(setting: str, ladder: Ladder) -> tuple[LadderMode, str]:
    """The mode a ladder runs in on this worker, and why, for the job's result.

    ``single`` and ``split`` are taken as asked. ``auto`` picks ``single``: it
    decodes once instead of N times. Measured in bench/results/ladder.md
    (``python -m bench.ladder --duration 8 --repeats 3``: an 8 s 1080p30 clip
    to 1080p, 720p and 480p on 2 cores), single used 17.5 CPU s against 26.2
    for split with one ladder at once, 35.5 against 52.6 with two, and
    finished first in every repeat.
    """
    if setting == "single":
        return "single", "--ladder-mode single"
    if setting == "split":
        return "split", "--ladder-mode split"
    if len(ladder.rungs) == 1:
        return "single", "auto: one rung"
    return "single", "auto: one decode for every rung; faster than one process per rung as measured"
