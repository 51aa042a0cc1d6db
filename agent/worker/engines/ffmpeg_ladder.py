"""FFmpeg command lines of a ladder job: encode the rungs, then package them.

A ladder runs in two stages, whatever the mode:

1. **Encode.** Each rung is encoded to a video-only MP4 in a staging
   directory, and the input's audio once to ``audio.m4a``. In ``single``
   mode one FFmpeg process decodes the input once, splits the picture with
   ``-filter_complex split=N`` and feeds N encoders; in ``split`` mode each
   rung is a process of its own that decodes the input itself (the first
   one also encodes the audio). Both write the same staged files, with the
   same encoder options, so the package does not depend on the mode.
2. **Package.** One stream-copy FFmpeg run reads the staged files and
   writes the package: HLS (fMP4 segments, a media playlist per rung and one
   for the audio, a master playlist), DASH (one MPD), or one MP4 per rung
   with the audio muxed in. Copying is cheap, and keeping packaging out of
   the encoders is what lets N independent processes make one package.

Every rung has a keyframe every :data:`~agent.ladder.SEGMENT_S` seconds and
none elsewhere, so the packager cuts every rung at the same instants.

FFmpeg's HLS master playlist leaves out ``FRAME-RATE``, counts only the
video in ``BANDWIDTH``, and names no ``CODECS`` for H.265 it copies;
:func:`finish_master_playlist` sets all three from the files as written.
Its DASH muxer leaves H.265's ``codecs`` empty too: :func:`finish_manifest`
fills it in.
Plain code apart from reading and writing those files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from ...ladder import SEGMENT_S, Ladder, LadderMode, Rung
from ...scenarios import EncodeSpec
from ..package_check import Bitrate, measure_hls_bitrate
from ..package_check.hls import attribute_list
from .ffmpeg import LOCAL_PROTOCOLS, codec_flags, num

__all__ = [
    "AUDIO_NAME",
    "DASH_MANIFEST",
    "HLS_MASTER",
    "LadderPlan",
    "Variant",
    "finish_manifest",
    "finish_master_playlist",
    "ladder_plan",
    "rewrite_master_playlist",
    "staged_video",
    "video_codec_string",
]

# The staged audio, and the audio rendition's directory in an HLS package.
AUDIO_NAME = "audio"
HLS_MASTER = "master.m3u8"
HLS_MEDIA = "index.m3u8"
DASH_MANIFEST = "manifest.mpd"
# One AAC track for every rung: what every HLS and DASH player decodes. FFmpeg's encoder makes AAC-LC,
# which RFC 6381 names mp4a.40.2.
AUDIO_ARGS = ("-c:a", "aac", "-b:a", "128k")
AUDIO_CODEC_STRING = "mp4a.40.2"


@attrs.frozen
class LadderPlan:
    """The FFmpeg runs of one ladder job, in order: ``encodes`` (together), then ``package``.

    ``encodes`` holds one argv in ``single`` mode and one per rung in
    ``split`` mode; ``encode_rungs[i]`` names the rungs ``encodes[i]``
    makes, for messages. ``package`` runs with the package directory as its
    working directory (FFmpeg's HLS muxer reads ``%`` in paths as patterns,
    so the package's own paths stay relative).
    """

    mode: LadderMode
    encodes: list[list[str]]
    encode_rungs: list[tuple[Rung, ...]]
    package: list[str]


def ladder_plan(
    ffmpeg: str, spec: EncodeSpec, input_path: str, *, stage_dir: Path, mode: LadderMode, audio: bool
) -> LadderPlan:
    """The command lines that turn ``input_path`` into ``spec``'s ladder package.

    Args:
        ffmpeg: the binary (``find_ffmpeg``).
        spec: a validated job with a ladder (``spec.ladder`` is not None).
        input_path: a local file (read with :data:`LOCAL_PROTOCOLS` only) or a URL.
        stage_dir: where the encodes write ``<rung.name>.mp4`` and ``audio.m4a``;
            the packager reads them from there.
        mode: ``single`` (one process, one decode) or ``split`` (a process per rung).
        audio: the input has an audio stream, which is then encoded once and
            shared by every rung.

    Example::

        plan = ladder_plan(ffmpeg, spec, "/in/clip.mp4", stage_dir=stage, mode="single", audio=True)
        # run plan.encodes together, then plan.package in the package directory
    """
    ladder = spec.ladder
    assert ladder is not None, "ladder_plan needs a spec with a ladder"
    audio_out = _audio_output(stage_dir) if audio else []
    if mode == "single":
        labels = [f"[v{rung.index}]" for rung in ladder.rungs]
        graph = f"[0:v:0]split={len(labels)}" + "".join(f"[s{rung.index}]" for rung in ladder.rungs) + ";" + ";".join(
            f"[s{rung.index}]{_picture(ladder, rung)}{label}" for rung, label in zip(ladder.rungs, labels)
        )
        argv = [*_input(ffmpeg, spec, input_path), "-filter_complex", graph]
        for rung, label in zip(ladder.rungs, labels):
            argv += ["-map", label, *_video_output(spec, ladder, rung, stage_dir)]
        return LadderPlan(mode, [argv + audio_out], [ladder.rungs], _package_argv(ffmpeg, ladder, stage_dir, audio))
    encodes = [
        [*_input(ffmpeg, spec, input_path), "-map", "0:v:0", "-vf", _picture(ladder, rung),
         *_video_output(spec, ladder, rung, stage_dir), *(audio_out if rung is ladder.rungs[0] else [])]
        for rung in ladder.rungs
    ]
    package = _package_argv(ffmpeg, ladder, stage_dir, audio)
    return LadderPlan(mode, encodes, [(rung,) for rung in ladder.rungs], package)


def staged_video(stage_dir: Path, rung: Rung) -> Path:
    """Where the encodes leave ``rung``'s video for the packager: ``<stage_dir>/<rung.name>.mp4``."""
    return stage_dir / f"{rung.name}.mp4"


def _input(ffmpeg: str, spec: EncodeSpec, input_path: str) -> list[str]:
    """The common head: progress on stdout, the input and how much of it (an input option: it bounds every output)."""
    argv = [ffmpeg, "-hide_banner", "-y", "-progress", "pipe:1", "-nostats"]
    if spec.realtime:
        argv.append("-re")
    if "://" not in input_path:
        argv += ["-protocol_whitelist", LOCAL_PROTOCOLS]
    if spec.duration is not None:
        argv += ["-t", num(spec.duration)]
    return argv + ["-i", input_path]


def _picture(ladder: Ladder, rung: Rung) -> str:
    """Frame rate, size and one display aspect ratio for every rung.

    The largest rung's shape is every rung's: a 426x240 rung is then shown
    at 16:9 like 1920x1080 (its pixels 640:639), as DASH's muxer requires of
    an adaptation set, rather than at the 71:40 of its square pixels.
    """
    top = max(ladder.rungs, key=lambda each: each.width * each.height)
    return f"fps={num(rung.fps)},scale={rung.width}:{rung.height},setdar={top.width}/{top.height}"


def _video_output(spec: EncodeSpec, ladder: Ladder, rung: Rung, stage_dir: Path) -> list[str]:
    rung_spec = attrs.evolve(
        spec, width=rung.width, height=rung.height, fps=rung.fps, codec=rung.codec, encoder=rung.encoder,
        bitrate=rung.bitrate, preset=ladder.preset, ladder=None,
    )
    keyint = str(rung.keyframe_interval)
    return [
        "-c:v", rung.encoder,
        "-b:v", rung.bitrate,
        "-maxrate", rung.bitrate,
        "-bufsize", f"{2 * rung.bitrate_kbps}k",
        # A keyframe at every segment boundary and nowhere else, the same instants in every rung.
        "-g", keyint,
        "-keyint_min", keyint,
        "-force_key_frames", f"expr:gte(t,n_forced*{num(SEGMENT_S)})",
        *codec_flags(rung_spec, software=True, fixed_gop=True),
        "-pix_fmt", "yuv420p",
        "-an", "-f", "mp4", str(staged_video(stage_dir, rung)),
    ]


def _audio_output(stage_dir: Path) -> list[str]:
    return ["-map", "0:a:0", "-vn", *AUDIO_ARGS, "-f", "mp4", str(stage_dir / f"{AUDIO_NAME}.m4a")]


def _package_argv(ffmpeg: str, ladder: Ladder, stage_dir: Path, audio: bool) -> list[str]:
    """One stream copy from the staged files into the package (the working directory)."""
    sources = [staged_video(stage_dir, rung) for rung in ladder.rungs]
    if audio:
        sources.append(stage_dir / f"{AUDIO_NAME}.m4a")
    argv = [ffmpeg, "-hide_banner", "-y", "-progress", "pipe:1", "-nostats", "-protocol_whitelist", "file"]
    for source in sources:
        argv += ["-i", str(source)]
    videos = [arg for i in range(len(ladder.rungs)) for arg in ("-map", f"{i}:v:0")]
    audio_map = ["-map", f"{len(ladder.rungs)}:a:0"] if audio else []
    if ladder.package == "files":
        for i, rung in enumerate(ladder.rungs):
            # faststart: a player can start before the whole file has arrived.
            argv += ["-map", f"{i}:v:0", *audio_map, "-c", "copy", "-movflags", "+faststart",
                     "-f", "mp4", f"{rung.name}.mp4"]
        return argv
    argv += [*videos, *audio_map, "-c", "copy"]
    if ladder.package == "dash":
        sets = "id=0,streams=v" + (" id=1,streams=a" if audio else "")
        return argv + [
            "-f", "dash", "-seg_duration", num(SEGMENT_S), "-use_template", "1", "-use_timeline", "1",
            "-dash_segment_type", "mp4", "-adaptation_sets", sets,
            "-init_seg_name", "init-$RepresentationID$.m4s",
            "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
            DASH_MANIFEST,
        ]
    group = ",agroup:audio" if audio else ""
    streams = [f"v:{i},name:{rung.name}{group}" for i, rung in enumerate(ladder.rungs)]
    if audio:
        streams.append(f"a:0,name:{AUDIO_NAME}{group},default:yes")
    return argv + [
        "-f", "hls", "-hls_time", num(SEGMENT_S), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", "%v/seg_%05d.m4s",
        "-master_pl_name", HLS_MASTER, "-var_stream_map", " ".join(streams),
        f"%v/{HLS_MEDIA}",
    ]


# --- the HLS master playlist ---------------------------------------------------------------


@attrs.frozen
class Variant:
    """What the master playlist says of one rung: measured rates, frame rate, video codec string."""

    rates: Bitrate
    fps: float
    codec: str


def rewrite_master_playlist(text: str, variants: dict[str, Variant], audio: Bitrate | None) -> str:
    """FFmpeg's master playlist with each variant's measured rates (plus its audio's), codecs and ``FRAME-RATE``.

    ``variants`` are keyed by the URI the playlist names (``1-1080p30/index.m3u8``);
    other lines are kept as they are.
    """
    lines = text.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        uri = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.startswith("#EXT-X-STREAM-INF:") and uri in variants:
            variant = variants[uri]
            total = variant.rates + audio if audio is not None else variant.rates
            attributes = attribute_list(line.removeprefix("#EXT-X-STREAM-INF:"))
            attributes["BANDWIDTH"] = str(round(total.peak))
            attributes["AVERAGE-BANDWIDTH"] = str(round(total.average))
            codecs = [variant.codec] + ([AUDIO_CODEC_STRING] if audio is not None else [])
            attributes["CODECS"] = '"' + ",".join(codecs) + '"'
            attributes["FRAME-RATE"] = f"{variant.fps:.3f}"
            line = "#EXT-X-STREAM-INF:" + ",".join(f"{key}={value}" for key, value in attributes.items())
        out.append(line)
    return "\n".join(out) + "\n"


def video_codec_string(init: bytes) -> str:
    """The RFC 6381 name of the H.264 or H.265 stream an fMP4 init segment describes (``avc1.64001f``).

    Read from its decoder configuration box: ``avcC`` gives profile,
    constraint flags and level; ``hvcC`` gives what ISO/IEC 14496-15 Annex E
    spells ``hvc1.<profile>.<compatibility, bits reversed>.<tier><level>.<constraints>``.

    Raises:
        ValueError: neither box is there.
    """
    if (at := init.find(b"avcC")) >= 0:
        profile_idc, compatibility_flags, level_idc = init[at + 5:at + 8]
        return f"avc1.{profile_idc:02x}{compatibility_flags:02x}{level_idc:02x}"
    if (at := init.find(b"hvcC")) >= 0:
        config = init[at + 4:at + 17]
        space, tier, profile = config[1] >> 6, (config[1] >> 5) & 1, config[1] & 0x1F
        compatibility = int(f"{int.from_bytes(config[2:6], 'big'):032b}"[::-1], 2)
        constraints = config[6:12].rstrip(b"\0")
        parts = [f"{' ABC'[space].strip()}{profile}", f"{compatibility:X}", f"{'LH'[tier]}{config[12]}"]
        return ".".join(["hvc1", *parts, *(f"{byte:X}" for byte in constraints)])
    raise ValueError("no avcC or hvcC box in the init segment")


def finish_master_playlist(package_dir: Path, rungs: Sequence[Rung], audio: bool) -> None:
    """Rewrite ``master.m3u8`` in ``package_dir`` from the files as written (blocking; small files)."""
    master = package_dir / HLS_MASTER
    variants = {
        f"{rung.name}/{HLS_MEDIA}": Variant(
            measure_hls_bitrate(package_dir / rung.name / HLS_MEDIA), rung.fps,
            video_codec_string(next((package_dir / rung.name).glob("init*.mp4")).read_bytes()),
        )
        for rung in rungs
    }
    audio_rates = measure_hls_bitrate(package_dir / AUDIO_NAME / HLS_MEDIA) if audio else None
    master.write_text(rewrite_master_playlist(master.read_text(), variants, audio_rates))


# A representation whose codecs FFmpeg's DASH muxer left empty; its init segment is named by its id.
_UNNAMED_CODEC = re.compile(r'(<Representation id="(\d+)"[^>]*? codecs=")(")')


def finish_manifest(package_dir: Path) -> None:
    """Name the codecs of the video representations FFmpeg's DASH muxer left empty (H.265 it copies)."""
    manifest = package_dir / DASH_MANIFEST

    def named(match: re.Match[str]) -> str:
        init = package_dir / f"init-{match[2]}.m4s"
        return match[1] + video_codec_string(init.read_bytes()) + match[3]

    manifest.write_text(_UNNAMED_CODEC.sub(named, manifest.read_text()))
