"""The GStreamer engine: ``gst-launch-1.0`` pipelines for the same scenarios as FFmpeg.

A pipeline is built from tables (one row per codec, container and sink) as a
list of argv tokens; nothing goes through a shell. gst-launch joins its
arguments and parses them again, so every string value is double-quoted
with its quotes and backslashes escaped, and the values were validated by
:func:`~agent.scenarios.build_spec` before they get here.

What the engine does not do, it says through :meth:`GStreamer.unsupported`,
and the job runner gives the job to FFmpeg instead:

* Only the generated input: gst-launch cannot stop a pipeline at a duration
  (there is no seek from the command line, and ``identity eos-after`` lets
  buffers through once a ``queue`` or ``videorate`` sits upstream), so it
  plays its input to the end, which only the generated clip matches exactly.
* RTMP carries H.264 only: ``flvmux`` knows no H.265 or VP9.

Progress comes from ``progressreport``, which prints the position in whole
seconds once a second (see :mod:`agent.worker.progress`).
"""

from __future__ import annotations

import fractions
import logging
import re
import shutil
from collections.abc import Callable

import attrs
import trio

from ...scenarios import VP9_PRESETS, EncodeSpec
from ..guardian import Guardian
from ..processes import capture_child
from . import keyframe_interval

__all__ = ["GStreamer", "encoder_element", "find_gstreamer", "pipeline_argv", "required_elements"]

log = logging.getLogger(__name__)

# Scanning the plugin registry for the first time takes seconds on a cold cache.
INSPECT_TIMEOUT_S = 60.0
# libvpx's deadlines in microseconds per frame: 1 is its "realtime", 1 s its "good".
_VPX_DEADLINE_US = {"realtime": 1, "good": 1_000_000}

_Props = Callable[[EncodeSpec, int], dict[str, object]]


@attrs.frozen
class _Codec:
    encoder: str
    parser: str
    props: _Props


def _x26x_props(spec: EncodeSpec, keyint: int) -> dict[str, object]:
    return {"bitrate": spec.bitrate_kbps, "speed-preset": spec.preset, "key-int-max": keyint}


def _vp9_props(spec: EncodeSpec, keyint: int) -> dict[str, object]:
    deadline, cpu_used = VP9_PRESETS[spec.preset]
    return {
        "target-bitrate": spec.bitrate_kbps * 1000,
        "deadline": _VPX_DEADLINE_US[deadline],
        "cpu-used": cpu_used,
        "keyframe-max-dist": keyint,
        "row-mt": True,
    }


_CODECS = {
    "h264": _Codec("x264enc", "h264parse", _x26x_props),
    "h265": _Codec("x265enc", "h265parse", _x26x_props),
    "vp9": _Codec("vp9enc", "", _vp9_props),
}
# Container -> muxer and the properties it needs; flv is the RTMP stream format.
_MUXERS: dict[str, tuple[str, dict[str, object]]] = {
    "mp4": ("mp4mux", {}),
    "webm": ("webmmux", {}),
    "flv": ("flvmux", {"streamable": True}),
}
# Output mode -> sink and the property naming where it writes.
_SINKS = {"file": ("filesink", "location"), "rtmp": ("rtmp2sink", "location")}
# Codecs each container can carry in GStreamer.
_CONTAINER_CODECS = {"mp4": ("h264", "h265"), "webm": ("vp9",), "flv": ("h264",)}
_SOURCE = ("filesrc", "decodebin", "videoconvert", "videoscale", "videorate", "progressreport")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prop(name: str, value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = _quoted(value)
    else:
        text = str(value)
    return f"{name}={text}"


def _element(name: str, props: dict[str, object]) -> list[str]:
    return [name, *(_prop(k, v) for k, v in props.items())]


def _framerate(fps: float) -> str:
    rate = fractions.Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def encoder_element(codec: str) -> str:
    """The element that encodes ``codec``: ``x264enc``, ``x265enc``, ``vp9enc``."""
    return _CODECS[codec].encoder


def required_elements(spec: EncodeSpec) -> list[str]:
    """Every element the pipeline for ``spec`` uses."""
    codec = _CODECS[spec.codec]
    return [*_SOURCE, codec.encoder, *([codec.parser] if codec.parser else []),
            _MUXERS[spec.container][0], _SINKS[spec.output_mode][0]]


def pipeline_argv(gst_launch: str, spec: EncodeSpec, input_path: str, output: str) -> list[str]:
    """The argv of ``gst-launch-1.0`` encoding ``input_path`` as ``spec`` asks.

    ``-e`` turns the SIGINT of a graceful stop into an end-of-stream, so the
    muxer finalises the file. A real-time job lets the sink hold each buffer
    until its time, as ``-re`` does for FFmpeg.

    Example::

        argv = pipeline_argv("gst-launch-1.0", spec, "/cache/clip.mp4", "/work/out/job.mp4")
    """
    codec = _CODECS[spec.codec]
    keyint = keyframe_interval(spec.fps)
    muxer, mux_props = _MUXERS[spec.container]
    sink, target = _SINKS[spec.output_mode]
    caps = (
        f"video/x-raw,format=I420,width={spec.width},height={spec.height},"
        f"framerate={_framerate(spec.fps)},pixel-aspect-ratio=1/1"
    )
    stages = [
        _element("filesrc", {"location": input_path}),
        ["decodebin"], ["videoconvert"], ["videoscale"], ["videorate"], [caps],
        _element(codec.encoder, codec.props(spec, keyint)),
        *([[codec.parser]] if codec.parser else []),
        _element("progressreport", {"update-freq": 1}),
        _element(muxer, mux_props),
        _element(sink, {target: output, "sync": spec.realtime}),
    ]
    argv = [gst_launch, "-e"]
    for stage in stages:
        argv += [*stage, "!"]
    return argv[:-1]


@attrs.frozen
class GStreamer:
    """An installed GStreamer: the launcher and the elements its plugins provide."""

    launch: str
    elements: frozenset[str]

    def unsupported(self, spec: EncodeSpec, *, generated_input: bool) -> str:
        """Why this engine cannot run ``spec``, or ``""`` when it can."""
        if not generated_input:
            return "GStreamer pipelines cannot stop at the job's duration, so they only encode generated inputs"
        if spec.codec not in _CONTAINER_CODECS[spec.container]:
            return f"GStreamer cannot put {spec.codec} into {spec.container}"
        missing = [e for e in required_elements(spec) if e not in self.elements]
        if missing:
            return f"GStreamer elements not installed: {', '.join(missing)}"
        return ""


_INSPECT_LINE = re.compile(r"^[\w.-]+:\s+([\w-]+):", re.M)


async def find_gstreamer(override: str = "", *, guardian: Guardian | None = None) -> GStreamer | None:
    """The GStreamer to run pipelines with, or None when it is not installed.

    ``override`` replaces the ``gst-launch-1.0`` on PATH; the element list
    always comes from ``gst-inspect-1.0``, which lists every installed
    element in one run; ``guardian`` kills it should the agent die meanwhile.
    """
    launch = shutil.which(override or "gst-launch-1.0")
    inspect = shutil.which("gst-inspect-1.0")
    if launch is None or inspect is None:
        log.info("GStreamer engine unavailable: gst-launch-1.0 or gst-inspect-1.0 not found")
        return None
    try:
        with trio.fail_after(INSPECT_TIMEOUT_S):
            listing = await capture_child([inspect], guardian=guardian)
    except (OSError, trio.TooSlowError) as exc:
        log.warning("GStreamer engine unavailable: gst-inspect-1.0 failed (%r)", exc)
        return None
    elements = frozenset(_INSPECT_LINE.findall(listing.stdout.decode(errors="replace")))
    return GStreamer(launch=launch, elements=elements)
