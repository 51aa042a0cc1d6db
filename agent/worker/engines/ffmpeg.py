"""The FFmpeg engine: finding the binary, building argv lists, checking media.

Every FFmpeg command the worker runs is built here, as a list (never a shell
string) from an :class:`~agent.scenarios.EncodeSpec` whose values were already
validated. There is no ffprobe in the ``imageio-ffmpeg`` wheel, so media is
inspected with FFmpeg itself: a stream copy to the null muxer reads every
packet (a cheap integrity check) and prints the stream line we parse.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from typing import TYPE_CHECKING

import attrs
import trio

from ...scenarios import VP9_PRESETS, EncodeSpec
from ..processes import STDERR_TAIL_LINES, capture_child
from ..progress import ProgressParser
from . import keyframe_interval
from .hwaccel import HardwareEncoder

if TYPE_CHECKING:
    from ..guardian import Guardian

__all__ = [
    "EncoderNotFound",
    "FFmpegFailed",
    "MediaInfo",
    "codec_flags",
    "ProbeFailed",
    "decodes_cleanly",
    "encode_argv",
    "find_ffmpeg",
    "num",
    "parse_media_info",
    "probe_media",
    "stderr_tail",
    "test_input_argv",
]

log = logging.getLogger(__name__)

# The synthetic input must not be trivially compressible, or every encode of it
# is unrealistically cheap: moving test pattern plus temporal noise.
TEST_SOURCE = "testsrc2=size={width}x{height}:rate={fps},noise=alls=20:allf=t+u"

# What FFmpeg may open for a local input: the file, and what an HLS copy needs
# (crypto for AES-128 segments, data for inline URIs). No network protocol, so a
# playlist or other reference in the file cannot reach a host the worker did
# not check (see agent/worker/fetch.py).
LOCAL_PROTOCOLS = "file,crypto,data"

_AUDIO_CODEC = {"mp4": ("aac", "128k"), "flv": ("aac", "128k"), "webm": ("libopus", "96k")}


class EncoderNotFound(RuntimeError):
    """No usable FFmpeg binary: the worker cannot run any job until one is installed."""


class FFmpegFailed(RuntimeError):
    """An FFmpeg run we depend on exited non-zero; ``stderr_tail`` says why."""

    def __init__(self, message: str, *, returncode: int, stderr_tail: str) -> None:
        detail = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no output"
        super().__init__(f"{message} (ffmpeg exit code {returncode}: {detail})")
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ProbeFailed(FFmpegFailed):
    """FFmpeg could not read the file as a video: missing, truncated, or not media."""


def find_ffmpeg(override: str = "") -> str:
    """The FFmpeg binary to run: ``override``, else ``ffmpeg`` on PATH, else the wheel's.

    PATH comes first so an operator's build (with hardware encoders, say) wins
    over the bundled one; the ``imageio-ffmpeg`` wheel means ``pip install``
    alone gives a working encoder.

    Raises:
        EncoderNotFound: ``override`` is not an executable file, or there is no
            FFmpeg at all.
    """
    if override:
        path = shutil.which(override)
        if path is None:
            raise EncoderNotFound(
                f"--ffmpeg {override!r} is not an executable file; give the path of an ffmpeg binary"
            )
        return path
    path = shutil.which("ffmpeg")
    if path is not None:
        return path
    try:
        # Imported late: with ffmpeg on PATH the wheel is optional (distro packages).
        import imageio_ffmpeg  # type: ignore[import-untyped]

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise EncoderNotFound(
            "no ffmpeg found: install ffmpeg on PATH (or the imageio-ffmpeg package), or pass --ffmpeg PATH"
        ) from exc


def num(value: float) -> str:
    """A number as FFmpeg reads it: ``30`` not ``30.0``, ``29.97`` as is."""
    return f"{value:.6g}"


def encode_argv(
    ffmpeg: str, spec: EncodeSpec, input_path: str, output: str, *, hardware: HardwareEncoder | None = None
) -> list[str]:
    """The full argv of one encode, for ``trio.run_process``.

    Progress goes to stdout as ``key=value`` blocks (see
    :class:`~agent.worker.progress.ProgressParser`). There is no ``-nostdin``,
    so a runner that keeps stdin open may send ``q`` to stop gracefully. Audio is kept when the input has
    some; the generated input has none, so its encode names no audio options
    (FFmpeg would log that an audio bitrate was not used for any stream). The
    container is set explicitly, so any output name works.

    Args:
        ffmpeg: the binary, from :func:`find_ffmpeg`.
        spec: the validated job.
        input_path: file path or URL to read; a file path may lead FFmpeg to
            no other protocols than :data:`LOCAL_PROTOCOLS`.
        output: file path, or the RTMP URL when ``spec.output_mode`` is ``rtmp``.
        hardware: a detected hardware encoder for ``spec.codec`` to use instead
            of the software one; its device is opened and frames uploaded to
            it. Software presets do not apply to it: it runs at its defaults.

    Example::

        argv = encode_argv(ffmpeg, build_spec(job), "/in/clip.mp4", "/work/out/job.mp4")
    """
    keyint = keyframe_interval(spec.fps)
    audio_codec, audio_bitrate = _AUDIO_CODEC[spec.container]
    argv = [ffmpeg, "-hide_banner", "-y", "-progress", "pipe:1", "-nostats"]
    if hardware is not None:
        argv += hardware.device_args
    if spec.realtime:
        argv.append("-re")
    if "://" not in input_path:
        argv += ["-protocol_whitelist", LOCAL_PROTOCOLS]
    audio_map = ["-map", "0:a:0?"] if spec.input else []
    # No -t for a whole input: FFmpeg stops at its end.
    length = ["-t", num(spec.duration)] if spec.duration is not None else []
    argv += ["-i", input_path, "-map", "0:v:0", *audio_map, *length]
    upload = hardware.upload if hardware is not None else ""
    filters = [f"fps={num(spec.fps)}", f"scale={spec.width}:{spec.height}"] + ([upload] if upload else [])
    argv += ["-vf", ",".join(filters)]
    argv += [
        "-c:v", hardware.name if hardware is not None else spec.encoder,
        "-b:v", spec.bitrate,
        "-maxrate", spec.bitrate,
        # Two seconds of buffer at the target rate: steady enough for live streams.
        "-bufsize", f"{2 * spec.bitrate_kbps}k",
        "-g", str(keyint),
    ]
    argv += codec_flags(spec, software=hardware is None)
    if not upload:
        # Uploaded frames are already in the device's format; converting them back would fail.
        argv += ["-pix_fmt", "yuv420p"]
    argv += ["-c:a", audio_codec, "-b:a", audio_bitrate] if spec.input else ["-an"]
    argv += ["-f", spec.container, output]
    return argv


def codec_flags(spec: EncodeSpec, *, software: bool, fixed_gop: bool = False) -> list[str]:
    """The encoder's own options for ``spec``: preset or speed, quiet logs, the hvc1 tag.

    ``fixed_gop`` turns off the keyframes encoders add at scene cuts (and
    x265's open GOPs), so that keyframes fall only where ``-g`` and
    ``-force_key_frames`` put them: the same instants in every rung of a ladder.
    """
    # Apple's players only accept H.265 in MP4 tagged hvc1, whatever made it.
    tag = ["-tag:v", "hvc1"] if spec.codec == "h265" and spec.container == "mp4" else []
    if not software:
        return tag
    if spec.codec == "vp9":
        deadline, cpu_used = VP9_PRESETS[spec.preset]
        # row-mt lets libvpx use more than one thread per tile column.
        return ["-deadline", deadline, "-cpu-used", str(cpu_used), "-row-mt", "1"]
    flags = ["-preset", spec.preset]
    if spec.codec == "h265":
        # x265 logs every frame type at info level; keep stderr for real problems.
        flags += ["-x265-params", "log-level=error" + (":scenecut=0:open-gop=0" if fixed_gop else "")]
    elif fixed_gop:
        flags += ["-sc_threshold", "0"]
    return flags + tag


def test_input_argv(ffmpeg: str, width: int, height: int, fps: float, duration: float, output: str) -> list[str]:
    """The argv that writes a synthetic ``testsrc2`` + noise clip to ``output`` as MP4.

    Encoded with ultrafast x264 at near-transparent quality (crf 18): quick to
    make, and what the real encode reads is the picture, not our artefacts.
    """
    source = TEST_SOURCE.format(width=width, height=height, fps=num(fps))
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-f", "lavfi", "-i", source, "-t", num(duration),
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
        "-f", "mp4", output,
    ]


@attrs.frozen
class MediaInfo:
    """The first video stream of a file, as FFmpeg reads it.

    ``codec`` is FFmpeg's name for it: ``h264``, ``hevc``, ``vp9``;
    ``audio_codec`` names the first audio stream, ``""`` when there is none.
    """

    codec: str
    width: int
    height: int
    fps: float
    duration: float
    size_bytes: int
    audio_codec: str = ""


# "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive),
#  1280x720 [SAR 1:1 DAR 16:9], 2500 kb/s, 30 fps, 30 tbr, 15360 tbn (default)"
_VIDEO_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: Video: (?P<codec>[\w-]+)(?P<rest>.*)$", re.M)
_AUDIO_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: Audio: (?P<codec>[\w-]+)", re.M)
_SIZE = re.compile(r", (\d+)x(\d+)(?=[\s,]|$)")
_RATE = re.compile(r", (\d+(?:\.\d+)?)(k?) (?:fps|tbr)\b")
_DURATION = re.compile(r"Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


def stderr_tail(stderr: bytes, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of FFmpeg's stderr, decoded leniently."""
    text = stderr.decode("utf-8", "replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def parse_media_info(stderr: str, *, progress_out_time: float, size_bytes: int) -> MediaInfo | None:
    """Read the input's first video stream from FFmpeg's log; None if it has none.

    The duration is the container's ``Duration:`` header, what players show;
    files without one (FLV recorded from a stream) get how far the copy got,
    which is short of the header by the last frame's length.
    """
    header = stderr.split("Stream mapping:", 1)[0]
    stream = _VIDEO_STREAM.search(header)
    size = _SIZE.search(stream["rest"]) if stream else None
    if stream is None or size is None:
        return None
    rate = _RATE.search(stream["rest"])
    fps = float(rate[1]) * (1000 if rate[2] else 1) if rate else 0.0
    declared = _DURATION.search(header)
    if declared:
        duration = int(declared[1]) * 3600 + int(declared[2]) * 60 + float(declared[3])
    else:
        duration = progress_out_time
    audio = _AUDIO_STREAM.search(header)
    return MediaInfo(
        codec=stream["codec"],
        width=int(size[1]),
        height=int(size[2]),
        fps=fps,
        duration=duration,
        size_bytes=size_bytes,
        audio_codec=audio["codec"] if audio else "",
    )


async def probe_media(ffmpeg: str, path: str | os.PathLike[str], *, guardian: Guardian | None = None) -> MediaInfo:
    """Describe the first video stream of ``path``, reading all its packets on the way.

    The stream copy does not decode, so this is cheap even for long files, yet
    a truncated or corrupt container fails here. Cancel kills FFmpeg; wrap in
    ``trio.fail_after`` to bound it for network inputs. A worker passes its
    ``guardian``, which kills the probe should the worker die.

    Raises:
        ProbeFailed: the file is missing, unreadable, or holds no video.
    """
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-i", os.fspath(path),
        "-map", "0:v:0", "-c", "copy", "-progress", "pipe:1", "-nostats", "-f", "null", "-",
    ]
    result = await capture_child(argv, guardian=guardian)
    if result.returncode != 0:
        raise ProbeFailed(
            f"cannot read {os.fspath(path)!r} as video", returncode=result.returncode,
            stderr_tail=stderr_tail(result.stderr),
        )
    progress = ProgressParser()
    progress.feed(result.stdout + b"\n")
    out_time = progress.latest.out_time_s if progress.latest else 0.0
    size_bytes = (await trio.Path(path).stat()).st_size
    stderr = result.stderr.decode("utf-8", "replace")
    info = parse_media_info(stderr, progress_out_time=out_time, size_bytes=size_bytes)
    if info is None:
        raise ProbeFailed(
            f"no video stream line found for {os.fspath(path)!r}", returncode=result.returncode,
            stderr_tail=stderr_tail(result.stderr),
        )
    return info


async def decodes_cleanly(ffmpeg: str, path: str | os.PathLike[str]) -> bool:
    """True if FFmpeg decodes every frame of ``path`` without a single error message.

    A full decode: as slow as playing the file at top speed, so meant for
    tests and spot checks, not for every job.
    """
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", os.fspath(path), "-f", "null", "-"]
    result = await capture_child(argv, guardian=None)
    if result.returncode != 0 or result.stderr.strip():
        log.debug("%s does not decode cleanly: %s", path, stderr_tail(result.stderr))
        return False
    return True
