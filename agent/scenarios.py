"""Scenario grammar and job parameter validation.

A job names a scenario (``720p30-h264``) and may override parts of it with
parameters (``{"bitrate": "5M", "duration": 120}``). :func:`build_spec` turns
both into an :class:`EncodeSpec` whose every value has passed an allow-list or
a strict pattern, so the encoder argv built from it cannot carry an option, a
shell metacharacter or a path outside the allowed directories. Anything else
raises :class:`JobRejected`, which the job runner reports as a ``user_error``.

Plain code: nothing here starts a process or touches the network.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from .hardware import HARDWARE_VENDORS
from .models import Job

if TYPE_CHECKING:
    from .ladder import Ladder

__all__ = [
    "CODECS",
    "DEFAULT_DURATION_S",
    "HARDWARE_CHOICES",
    "PARAMETERS",
    "VP9_PRESETS",
    "EncodeSpec",
    "JobRejected",
    "Scenario",
    "build_spec",
    "default_bitrate",
]


class JobRejected(ValueError):
    """A job's scenario or a parameter has a value we will not run.

    ``field`` names the parameter (``"bitrate"``, ``"resource_limits.timeout_sec"``,
    ``"scenario"``); the message says what is allowed, so the submitter can fix
    the job from the result alone.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid {field}: {message}")
        self.field = field
        self.reason = message


# Codec name in scenarios and parameters -> the FFmpeg encoder that makes it.
CODECS = {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9"}
_CODEC_ALIASES = {"hevc": "h265"}

_X26X_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast",
    "medium", "slow", "slower", "veryslow", "placebo",
)
# libvpx-vp9 has no presets; x264 names map to its deadline and cpu-used
# speed knobs (higher cpu-used is faster), and its own deadline names work too.
VP9_PRESETS: dict[str, tuple[str, int]] = {
    "ultrafast": ("realtime", 8),
    "superfast": ("realtime", 7),
    "veryfast": ("realtime", 6),
    "faster": ("realtime", 5),
    "fast": ("good", 4),
    "medium": ("good", 3),
    "slow": ("good", 2),
    "slower": ("good", 1),
    "veryslow": ("good", 0),
    "realtime": ("realtime", 8),
    "good": ("good", 2),
}
_PRESETS: dict[str, tuple[str, ...]] = {
    "h264": _X26X_PRESETS,
    "h265": _X26X_PRESETS,
    "vp9": tuple(VP9_PRESETS),
}
# veryfast keeps a 1080p30 encode real-time on a few cores: a farm's default
# must not make live jobs fall behind.
_DEFAULT_PRESET = "veryfast"

# "auto" uses a hardware encoder for the codec when the worker detected one
# (and falls back to software if it fails); "none" insists on software; a
# vendor name asks for that vendor's encoder, else software.
HARDWARE_CHOICES = ("auto", "none", *HARDWARE_VENDORS)

_MIN_WIDTH, _MAX_WIDTH = 16, 7680
_MIN_HEIGHT, _MAX_HEIGHT = 16, 4320
_MIN_FPS, _MAX_FPS = 1.0, 240.0
_MIN_KBPS, _MAX_KBPS = 16, 500_000
_MAX_DURATION_S = 86_400.0
# A week: longer than any sane job, short enough to catch a unit mistake (ms).
_MAX_TIMEOUT_S = 7 * 86_400.0
# Ten seconds is what the original agent encodes when a job gives no duration (and no file to encode whole).
DEFAULT_DURATION_S = 10.0

# h264 kbps at 30 fps for heights up to the key; the smallest row that fits wins.
_H264_KBPS_AT_30FPS = ((240, 400), (360, 800), (480, 1200), (720, 2500), (1080, 5000), (1440, 9000))
_H264_KBPS_ABOVE = 16_000
# h265 and vp9 reach h264's quality at roughly 60 % of its bitrate.
_CODEC_BITRATE_FACTOR = {"h264": 1.0, "h265": 0.6, "vp9": 0.6}
# Above 30 fps the encoder needs more bits, but not twice as many for twice the frames.
_HIGH_FPS_FACTOR = 1.5

_SCENARIO = re.compile(r"^(?:(?P<height>\d{2,4})p|(?P<k>[24])k)(?P<fps>\d{1,3})-(?P<codec>[a-z0-9]+)$", re.I)
_RESOLUTION = re.compile(r"^(\d{2,4})[xX](\d{2,4})$")
_BITRATE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")
_NUMBER = re.compile(r"^\d{1,6}(?:\.\d{1,6})?$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_STREAM_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~=&?+-]{0,255}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!$&'()*+,=%-]{1,2048}$")
_INPUT_SCHEMES = ("http", "https", "rtmp", "rtmps", "srt", "s3")
# An input uploaded to the master: "artifact:<sha256 in hex>", downloaded by the worker that runs the job.
ARTIFACT_PREFIX = "artifact:"
_ARTIFACT = re.compile(r"^artifact:[0-9a-f]{64}$")
# Where a job's output goes once encoded: uploaded to the master, or kept on the worker only;
# besides these words, an http(s) URL (PUT there) or s3://bucket/prefix (see agent/worker/delivery.py).
DELIVERIES = ("master", "none")
_DELIVERY_SCHEMES = ("http", "https", "s3")
# S3 bucket names: 3 to 63 lower-case letters, digits, dots and hyphens, starting and ending alike.
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RTMP_SCHEMES = ("rtmp", "rtmps")
_LIVE_SCHEMES = ("rtmp", "rtmps", "srt")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")

OutputMode = Literal["file", "rtmp"]


def _width_for(height: int) -> int:
    """16:9 width rounded to an even number, as yuv420p needs."""
    return 2 * round(height * 16 / 9 / 2)


def _container(codec: str, output_mode: OutputMode) -> str:
    if output_mode == "rtmp":
        return "flv"
    return "webm" if codec == "vp9" else "mp4"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@attrs.frozen
class Scenario:
    """What a scenario name asks for: ``1080p60-h265`` is 1920x1080 at 60 fps in H.265."""

    height: int
    width: int
    fps: int
    codec: str

    @classmethod
    def parse(cls, name: str) -> Scenario:
        """Read ``<height>p<fps>-<codec>``, with ``4K`` for 2160p and ``2K`` for 1440p.

        Case does not matter and ``hevc`` means ``h265``::

            >>> Scenario.parse("4K60-HEVC")
            Scenario(height=2160, width=3840, fps=60, codec='h265')

        Raises:
            JobRejected: field ``scenario``; the name does not follow the grammar,
                or names an unknown codec, an odd or out-of-range height or fps.
        """
        match = _SCENARIO.fullmatch(name.strip(" "))
        if match is None:
            raise JobRejected(
                "scenario",
                f"{_shown(name)} does not read as <height>p<fps>-<codec>, "
                "for example 720p30-h264, 1080p60-h265, 480p30-vp9 or 4K60-h264",
            )
        height = {"2": 1440, "4": 2160}[match["k"]] if match["k"] else int(match["height"])
        fps = int(match["fps"])
        codec = _CODEC_ALIASES.get(match["codec"].lower(), match["codec"].lower())
        if codec not in CODECS:
            raise JobRejected(
                "scenario", f"unknown codec {match['codec']!r} in {name!r}; use one of h264, h265 (hevc), vp9"
            )
        if not (_MIN_HEIGHT <= height <= _MAX_HEIGHT and height % 2 == 0):
            raise JobRejected(
                "scenario", f"height {height} in {name!r} must be even and within {_MIN_HEIGHT}..{_MAX_HEIGHT}"
            )
        if not _MIN_FPS <= fps <= _MAX_FPS:
            raise JobRejected("scenario", f"frame rate {fps} in {name!r} must be within 1..240")
        return cls(height=height, width=_width_for(height), fps=fps, codec=codec)


@attrs.frozen
class EncodeSpec:
    """Everything an encoder needs for one job, every value already validated.

    ``input`` is ``""`` when the worker should generate a test input, an
    absolute path inside an allowed input directory, or a URL. ``duration``
    is None when the whole input is encoded (see :func:`build_spec`). ``output_name``
    is a bare file name; ``output_dir`` is ``""`` for the runner's per-job
    directory in its work dir, or an absolute directory inside the one the
    operator allowed with ``--output-dir``.
    """

    scenario: str
    width: int
    height: int
    fps: float
    codec: str
    encoder: str
    bitrate: str
    preset: str
    duration: float | None
    input: str
    output_name: str
    output_mode: OutputMode
    hardware: str
    rtmp_url: str
    timeout_sec: float | None
    realtime: bool
    output_dir: str = ""
    # "master": the output is uploaded to the master's artefact store; "none": it stays on the worker.
    deliver: str = "none"
    # An adaptive-bitrate ladder: the output is a package directory of its rungs (agent/ladder.py). The
    # fields above then describe the generated test source; the rungs say what is encoded.
    ladder: Ladder | None = None

    @property
    def bitrate_kbps(self) -> int:
        """The target bitrate as a number; ``bitrate`` is always ``<n>k``."""
        return int(self.bitrate[:-1])

    @property
    def container(self) -> str:
        """The FFmpeg muxer: ``flv`` for RTMP, else ``webm`` for VP9 and ``mp4`` for H.264/H.265."""
        return _container(self.codec, self.output_mode)

    @property
    def extension(self) -> str:
        return "." + self.container


def default_bitrate(width: int, height: int, fps: float, codec: str) -> str:
    """A bitrate that looks right for the size, rate and codec, as ``<kbps>k``.

    Rows are keyed by height for 16:9 frames; other shapes use the height their
    pixel count would have at 16:9, so 1080x1920 portrait gets the 1080p rate.
    """
    equivalent_height = math.sqrt(width * height * 9 / 16)
    kbps = float(next((k for h, k in _H264_KBPS_AT_30FPS if equivalent_height <= h * 1.01), _H264_KBPS_ABOVE))
    if fps > 30:
        kbps *= _HIGH_FPS_FACTOR
    kbps *= _CODEC_BITRATE_FACTOR[codec]
    return f"{int(round(kbps / 50) * 50)}k"


# Every key a job's parameters may hold; any other is refused, so a typo
# (presett=fast) fails at submit instead of running silently with the default.
PARAMETERS = (
    "bitrate", "codec", "deliver", "duration", "fps", "hardware", "input", "ladder", "output", "output_mode",
    "package", "preset", "realtime", "resolution", "resource_limits", "rtmp_url", "stream_key",
)


def _check_keys(params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - set(PARAMETERS))
    if not unknown:
        return
    guesses = [match for key in unknown for match in difflib.get_close_matches(key, PARAMETERS, n=1)]
    hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
    raise JobRejected(
        "parameters",
        f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{hint}; known keys: {', '.join(PARAMETERS)}",
    )


def build_spec(
    job: Job,
    *,
    input_dirs: Sequence[Path] = (),
    output_dir: Path | None = None,
    default_rtmp_host: str = "localhost",
    allow_private_inputs: bool = False,
) -> EncodeSpec:
    """Apply a job's parameters over its scenario and validate every value.

    A key not in :data:`PARAMETERS` is rejected, naming the known ones, as is a
    known key with a value we do not accept: nothing is silently dropped.
    Without a ``duration``, a job with a file or a downloaded input encodes
    all of it (``duration`` None); a generated clip or a live stream gets
    :data:`DEFAULT_DURATION_S`.

    Args:
        job: the claimed job.
        input_dirs: directories a local ``input`` path may resolve into; empty
            (the default) allows no local inputs at all, only generated ones
            and URLs, because a job must not read arbitrary files of the worker.
        output_dir: the directory the operator lets jobs write into; a job's
            ``output`` may then be a path inside it, and outputs default to
            ``<output_dir>/<job id>/``. None (the default) keeps every output
            in the runner's work dir, under a plain file name.
        default_rtmp_host: host of the default RTMP URL; the original agent
            streams to the master's host.
        allow_private_inputs: an input URL may name a loopback, private or
            link-local address. Off by default: a job must not make the
            worker fetch from services only its network can reach.

    Returns:
        The spec the engine builds its argv from.

    Raises:
        JobRejected: naming the field with the bad value and what is allowed.
    """
    scenario = Scenario.parse(job.scenario)
    params = job.parameters
    _check_keys(params)

    def given(key: str) -> bool:
        return params.get(key) is not None

    width, height = scenario.width, scenario.height
    if given("resolution"):
        width, height = _resolution(params["resolution"])
    fps = _fps(params["fps"]) if given("fps") else float(scenario.fps)
    codec, vendor = _codec(params["codec"]) if given("codec") else (scenario.codec, "")
    bitrate = _bitrate(params["bitrate"]) if given("bitrate") else default_bitrate(width, height, fps, codec)
    preset = _preset(params["preset"], codec) if given("preset") else _DEFAULT_PRESET
    input_ = _input(params["input"], input_dirs, allow_private_inputs) if given("input") else ""
    duration = _duration(params["duration"]) if given("duration") else _default_duration(input_)
    output_mode = _output_mode(params["output_mode"]) if given("output_mode") else "file"
    stream_key = _stream_key(params["stream_key"]) if given("stream_key") else ""
    rtmp_url = _rtmp_url(params["rtmp_url"]) if given("rtmp_url") else ""
    # Streaming is real-time by nature; a file job runs as fast as it can unless asked.
    realtime = _bool("realtime", params["realtime"]) if given("realtime") else output_mode == "rtmp"
    timeout_sec = _timeout(params["resource_limits"]) if given("resource_limits") else None
    hardware = _hardware(params["hardware"]) if given("hardware") else vendor or "auto"
    # An uploaded input's owner wants the output back; a benchmark's generated one moves no extra bytes.
    deliver = _deliver(params["deliver"], output_mode) if given("deliver") else (
        "master" if input_.startswith(ARTIFACT_PREFIX) and output_mode == "file" else "none"
    )

    ladder = _ladder(params, input_) if given("ladder") or given("package") else None

    safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", job.id).lstrip(".-")[:100] or "job"
    if output_mode == "rtmp":
        if not rtmp_url:
            rtmp_url = f"rtmp://{_host(default_rtmp_host, 'default_rtmp_host')}:1935/live/{stream_key or safe_id}"
        elif stream_key:
            rtmp_url = f"{rtmp_url.rstrip('/')}/{stream_key}"
    else:
        rtmp_url = ""
    default_name = f"{safe_id}.{ladder.package if ladder else _container(codec, output_mode)}"
    if output_dir is None:
        out_dir, output_name = "", _output(params["output"]) if given("output") else default_name
    else:
        target = params["output"] if given("output") else f"{safe_id}/{default_name}"
        out_dir, output_name = _output_in(target, Path(output_dir), safe_id)

    return EncodeSpec(
        scenario=job.scenario,
        width=width,
        height=height,
        fps=fps,
        codec=codec,
        encoder=CODECS[codec],
        bitrate=bitrate,
        preset=preset,
        duration=duration,
        input=input_,
        output_name=output_name,
        output_mode=output_mode,
        hardware=hardware,
        rtmp_url=rtmp_url,
        timeout_sec=timeout_sec,
        realtime=realtime,
        output_dir=out_dir,
        deliver=deliver,
        ladder=ladder,
    )


# --- one validator per parameter ----------------------------------------------


def _text(field: str, value: Any, max_len: int = 2048) -> str:
    """A string that can go into argv: no option look-alike, no control or shell characters."""
    if not isinstance(value, str):
        raise JobRejected(field, f"must be a string, got {type(value).__name__}")
    if ";" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise JobRejected(field, f"{_shown(value)} must not contain ';', newlines or control characters")
    text: str = value.strip(" ")
    if not text or len(text) > max_len:
        raise JobRejected(field, f"must be 1 to {max_len} characters")
    if text.startswith("-"):
        raise JobRejected(field, f"{_shown(text)} must not start with '-'")
    return text


def _number(field: str, value: Any, low: float, high: float, *, allow_low: bool = True) -> float:
    """A JSON number or a plain decimal string within bounds; booleans are not numbers."""
    if isinstance(value, bool):
        raise JobRejected(field, f"must be a number, got {value!r}")
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip(" ")):
        number = float(value)
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise JobRejected(field, f"must be a number, got {_shown(value)}")
    above_low = number >= low if allow_low else number > low
    if not (math.isfinite(number) and above_low and number <= high):
        bound = "" if allow_low else " (exclusive)"
        raise JobRejected(field, f"{_shown(value)} must be within {low:g}{bound}..{high:g}")
    return number


def _resolution(value: Any) -> tuple[int, int]:
    match = _RESOLUTION.fullmatch(_text("resolution", value, 16))
    if match:
        width, height = int(match[1]), int(match[2])
        if (
            _MIN_WIDTH <= width <= _MAX_WIDTH
            and _MIN_HEIGHT <= height <= _MAX_HEIGHT
            and width % 2 == 0
            and height % 2 == 0
        ):
            return width, height
    raise JobRejected(
        "resolution",
        f"{_shown(value)} must be <width>x<height> in even numbers, width {_MIN_WIDTH}..{_MAX_WIDTH}, "
        f"height {_MIN_HEIGHT}..{_MAX_HEIGHT}, for example 1280x720",
    )


def _fps(value: Any) -> float:
    return _number("fps", value, _MIN_FPS, _MAX_FPS)


def _codec(value: Any) -> tuple[str, str]:
    """The codec and the hardware vendor a name like ``h264_nvenc`` asks for ("" for none)."""
    name = _text("codec", value, 16).lower()
    base, _, vendor = name.partition("_")
    codec = _CODEC_ALIASES.get(base, base)
    if codec not in CODECS or (vendor and vendor not in HARDWARE_VENDORS):
        raise JobRejected(
            "codec",
            f"{_shown(value)} is not one of h264, h265 (hevc), vp9, "
            f"optionally with a hardware suffix ({', '.join('_' + v for v in HARDWARE_VENDORS)})",
        )
    return codec, vendor


def _bitrate(value: Any) -> str:
    """Normalise to whole kbps, ``<n>k``: a bare number is kbps, ``M`` is 1000 kbps."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        kbps = float(value)
    else:
        match = _BITRATE.fullmatch(value.strip(" ")) if isinstance(value, str) else None
        if match is None:
            raise JobRejected("bitrate", f"{_shown(value)} must look like 2500k, 5M or a number of kbit/s")
        kbps = float(match[1]) * (1000 if match[2].lower() == "m" else 1)
    if not (math.isfinite(kbps) and _MIN_KBPS <= kbps <= _MAX_KBPS):
        raise JobRejected("bitrate", f"{_shown(value)} must be within {_MIN_KBPS}k..{_MAX_KBPS // 1000}M")
    return f"{round(kbps)}k"


def _preset(value: Any, codec: str) -> str:
    preset = _text("preset", value, 16).lower()
    if preset not in _PRESETS[codec]:
        raise JobRejected("preset", f"{_shown(value)} is not a {codec} preset; use one of {', '.join(_PRESETS[codec])}")
    return preset


def _duration(value: Any) -> float:
    return _number("duration", value, 0.0, _MAX_DURATION_S, allow_low=False)


def _default_duration(input_: str) -> float | None:
    """None, the whole input, for a file or a download; the default for a generated clip or a live stream.

    A stream (rtmp, srt) may never end, so it keeps the original agent's default.
    """
    scheme = input_.partition("://")[0].lower() if "://" in input_ else ""
    return None if input_ and scheme not in _LIVE_SCHEMES else DEFAULT_DURATION_S


def _deliver(value: Any, output_mode: OutputMode) -> str:
    if isinstance(value, str) and "://" in value:
        value = _url("deliver", value, _DELIVERY_SCHEMES)
    elif value not in DELIVERIES:
        raise JobRejected(
            "deliver", f"must be one of {', '.join(DELIVERIES)}, an http(s) URL or s3://bucket/prefix, "
            f"got {_shown(value)}"
        )
    if value != "none" and output_mode != "file":
        raise JobRejected("deliver", f"deliver={value} needs output_mode=file: a stream leaves no file to deliver")
    return str(value)


def _ladder(params: dict[str, Any], input_: str) -> Ladder:
    # Imported here: agent.ladder builds on this module's validators.
    from .ladder import Ladder

    if input_.partition("://")[0].lower() in _LIVE_SCHEMES:
        raise JobRejected("ladder", f"a ladder needs a file input, not the stream {_shown(input_)}")
    return Ladder.from_params(params)


def _timeout(value: Any) -> float | None:
    if not isinstance(value, dict):
        raise JobRejected("resource_limits", f"must be an object such as {{\"timeout_sec\": 600}}, got {_shown(value)}")
    if value.get("timeout_sec") is None:
        return None
    return _number("resource_limits.timeout_sec", value["timeout_sec"], 0.0, _MAX_TIMEOUT_S, allow_low=False)


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip(" ").lower() in _TRUE + _FALSE:
        return value.strip(" ").lower() in _TRUE
    raise JobRejected(field, f"{_shown(value)} must be true or false")


def _output_mode(value: Any) -> OutputMode:
    mode = _text("output_mode", value, 16).lower()
    if mode == "file":
        return "file"
    if mode == "rtmp":
        return "rtmp"
    raise JobRejected("output_mode", f"{_shown(value)} must be file or rtmp")


def _output(value: Any) -> str:
    name = _text("output", value, 128)
    if not _FILE_NAME.fullmatch(name) or ".." in name:
        raise JobRejected(
            "output",
            f"{_shown(value)} must be a plain file name: letters, digits, '_', '.', '-', "
            "not starting with '.' or '-', no '/' and no '..'",
        )
    return name


def _output_in(value: Any, root: Path, safe_id: str) -> tuple[str, str]:
    """A path inside the operator's output directory, as (directory, file name).

    A plain name goes into ``<root>/<job id>/``; a relative path is taken from
    ``root``; an absolute one must already be inside it. Each part must be a
    plain name, and the resolved result (symlinks followed) must stay in ``root``.
    """
    text = _text("output", value, 1024)
    path = Path(text)
    resolved_root = root.resolve()
    if not path.is_absolute() and len(path.parts) == 1:
        path = Path(safe_id) / path
    relative = path if not path.is_absolute() else _relative_to(path, root, resolved_root)
    if relative is None or not all(_FILE_NAME.fullmatch(p) and ".." not in p for p in relative.parts):
        raise JobRejected(
            "output",
            f"{_shown(value)} must be a file name or a path inside {str(root)!r} made of plain names "
            "(letters, digits, '_', '.', '-'; no '..', not starting with '.' or '-')",
        )
    final = (resolved_root / relative).resolve()
    if not final.is_relative_to(resolved_root) or final == resolved_root:
        raise JobRejected("output", f"{_shown(value)} leads outside the output directory {str(root)!r}")
    return str(final.parent), final.name


def _relative_to(path: Path, *roots: Path) -> Path | None:
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root)
    return None


def _hardware(value: Any) -> str:
    choice = _text("hardware", value, 16).lower()
    if choice not in HARDWARE_CHOICES:
        raise JobRejected("hardware", f"{_shown(value)} must be one of {', '.join(HARDWARE_CHOICES)}")
    return choice


def _stream_key(value: Any) -> str:
    key = _text("stream_key", value, 256)
    if not _STREAM_KEY.fullmatch(key):
        raise JobRejected("stream_key", f"{_shown(value)} may hold letters, digits and _ . ~ = & ? + - only")
    return key


def _host(host: str, field: str) -> str:
    """A DNS name or an IP address; IPv6 comes back bracketed, ready for a URL."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if _HOST_NAME.fullmatch(host):
            return host
        raise JobRejected(field, f"host {_shown(host)} is not a DNS name or an IP address") from None
    return f"[{address}]" if address.version == 6 else str(address)


def _url(field: str, value: Any, schemes: Sequence[str]) -> str:
    url = _text(field, value)
    if not _URL_SAFE.fullmatch(url):
        raise JobRejected(field, f"{_shown(value)} has characters a URL may not hold; percent-encode them")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise JobRejected(field, f"{_shown(value)} must be a URL with scheme {', '.join(schemes)}")
    if parts.scheme.lower() == "s3":
        # The "host" is a bucket; the worker connects to the store's endpoint, never to it.
        if not S3_BUCKET.fullmatch(parts.netloc) or (field == "input" and not parts.path.strip("/")):
            raise JobRejected(field, f"{_shown(value)} must be s3://<bucket>/<key>, the bucket named with "
                              "3-63 lower-case letters, digits, dots or hyphens")
        return url
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or port == 0:
        raise JobRejected(field, f"{_shown(value)} needs a host and, if given, a port within 1..65535")
    _host(parts.hostname, field)
    return url


def _rtmp_url(value: Any) -> str:
    return _url("rtmp_url", value, _RTMP_SCHEMES)


def _non_public(host: str) -> str:
    """Why ``host`` names a non-public address, or ``""``; no lookup, so DNS names pass but localhost.

    The forms the resolver reads as IPv4 (``127.1``, ``2130706433``, ``0x7f.1``)
    count as the address they mean.
    """
    name = host.lower()
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    return "" if address.is_global else "private"


def _input(value: Any, input_dirs: Sequence[Path], allow_private: bool = False) -> str:
    """A URL (to a public address unless ``allow_private``), or a local path in an allowed directory.

    A local path must resolve, symlinks followed, inside one of ``input_dirs``.
    """
    text = _text("input", value, 4096)
    if text.startswith(ARTIFACT_PREFIX):
        if not _ARTIFACT.match(text):
            raise JobRejected("input", f"{_shown(value)} must be artifact:<the SHA-256 of the file, 64 hex digits>")
        return text
    if "://" in text:
        url = _url("input", text, _INPUT_SCHEMES)
        parts = urllib.parse.urlsplit(url)
        kind = "" if allow_private or parts.scheme == "s3" else _non_public(parts.hostname or "")
        if kind:
            raise JobRejected(
                "input",
                f"{_shown(value)} points at a {kind} address; this worker fetches only from public "
                "addresses unless started with --allow-private-inputs",
            )
        return url
    if not input_dirs:
        raise JobRejected("input", "local files are not allowed on this worker; give an http(s), rtmp or srt URL")
    roots = [Path(d).resolve() for d in input_dirs]
    path = Path(text)
    if path.is_absolute():
        candidates = [path.resolve()]
    else:
        # Relative paths name a file in an input directory; the first that has it wins.
        candidates = [(root / path).resolve() for root in roots]
        candidates.sort(key=lambda p: not p.exists())
    for candidate in candidates:
        if any(candidate.is_relative_to(root) for root in roots):
            return str(candidate)
    allowed = ", ".join(str(r) for r in roots)
    raise JobRejected("input", f"{_shown(value)} is outside the allowed input directories ({allowed})")
