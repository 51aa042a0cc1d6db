"""FFmpeg argv building, binary lookup and log parsing, without running FFmpeg (agent/worker/engines/ffmpeg.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest

from agent.models import Job
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.engines import ffmpeg as ff
from agent.worker.engines.hwaccel import HardwareEncoder


def spec_for(scenario: str = "720p30-h264", **params: Any) -> EncodeSpec:
    return build_spec(Job(id="job-1", scenario=scenario, parameters=params))


def option(argv: list[str], name: str) -> str:
    """The value after ``name``; fails the test if the option is absent."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_an_h264_file_encode_has_the_size_rate_bitrate_and_container_of_the_spec() -> None:
    """Everything the spec says ends up in its option, and the output comes last."""
    spec = spec_for(resolution="640x360", fps=25, bitrate="1M", duration=3, preset="fast")
    argv = ff.encode_argv("/bin/ffmpeg", spec, "/in/a.mp4", "/out/b.mp4")
    assert argv[0] == "/bin/ffmpeg" and argv[-1] == "/out/b.mp4"
    assert option(argv, "-i") == "/in/a.mp4"
    assert option(argv, "-vf") == "fps=25,scale=640:360"
    assert (option(argv, "-c:v"), option(argv, "-preset")) == ("libx264", "fast")
    assert (option(argv, "-b:v"), option(argv, "-maxrate"), option(argv, "-bufsize")) == ("1000k", "1000k", "2000k")
    assert (option(argv, "-t"), option(argv, "-g")) == ("3", "50")
    assert option(argv, "-pix_fmt") == "yuv420p"
    assert option(argv, "-f") == "mp4"
    assert option(argv, "-progress") == "pipe:1" and "-nostats" in argv and "-y" in argv


def test_stdin_stays_usable_for_a_graceful_stop() -> None:
    """No -nostdin: ffmpeg must still read the q a runner may send."""
    assert "-nostdin" not in ff.encode_argv("ffmpeg", spec_for(), "in.mp4", "out.mp4")


def test_realtime_reads_the_input_at_native_rate_before_opening_it() -> None:
    """-re is an input option, so it has to come before -i."""
    argv = ff.encode_argv("ffmpeg", spec_for(realtime=True), "in.mp4", "out.mp4")
    assert argv.index("-re") < argv.index("-i")
    assert "-re" not in ff.encode_argv("ffmpeg", spec_for(), "in.mp4", "out.mp4")


def test_a_local_input_may_lead_ffmpeg_to_no_network_protocol() -> None:
    """A file (a playlist, say) gets the local protocol whitelist before -i; a stream URL does not need it."""
    argv = ff.encode_argv("ffmpeg", spec_for(), "/work/fetch/x/index.m3u8", "out.mp4")
    assert option(argv, "-protocol_whitelist") == "file,crypto,data"
    assert argv.index("-protocol_whitelist") < argv.index("-i")
    assert "-protocol_whitelist" not in ff.encode_argv("ffmpeg", spec_for(), "rtmp://203.0.113.7/live/k", "out.mp4")


@pytest.mark.parametrize(("vendor", "device_flags", "filters"), [
    ("nvenc", [], "fps=30,scale=1280:720"),
    ("vaapi", ["-vaapi_device", "/dev/dri/renderD128"], "fps=30,scale=1280:720,format=nv12,hwupload"),
    ("qsv", ["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"],
     "fps=30,scale=1280:720,format=nv12,hwupload=extra_hw_frames=64"),
])
def test_a_hardware_encoder_opens_its_device_and_uploads_frames(
    vendor: str, device_flags: list[str], filters: str
) -> None:
    """The device comes before the input, the upload ends the filters, and software presets are left out."""
    hardware = HardwareEncoder(vendor, "h265")
    argv = ff.encode_argv("ffmpeg", spec_for("720p30-h265"), "in.mp4", "out.mp4", hardware=hardware)
    assert argv[argv.index("-nostats") + 1 : argv.index("-i")] == [*device_flags, "-protocol_whitelist", ff.LOCAL_PROTOCOLS]
    assert (option(argv, "-vf"), option(argv, "-c:v")) == (filters, hardware.name)
    assert option(argv, "-tag:v") == "hvc1"
    assert "-preset" not in argv and "-x265-params" not in argv
    assert ("-pix_fmt" in argv) is (vendor == "nvenc"), "uploaded frames keep the device's format"


def test_rtmp_streams_flv_to_the_url() -> None:
    """The URL is the output and the muxer is FLV whatever the codec."""
    spec = spec_for("480p30-vp9", output_mode="rtmp")
    argv = ff.encode_argv("ffmpeg", spec, "in.mp4", spec.rtmp_url)
    assert argv[-2:] == ["flv", "rtmp://localhost:1935/live/job-1"]


def test_audio_is_kept_only_if_the_input_has_some() -> None:
    """A given input's first audio stream is mapped if it has one; it gets the container's audio codec."""
    given = "https://93.184.216.34/in.mp4"
    argv = ff.encode_argv("ffmpeg", spec_for(input=given), given, "out.mp4")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["0:v:0", "0:a:0?"]
    assert (option(argv, "-c:a"), option(argv, "-b:a")) == ("aac", "128k")
    vp9 = ff.encode_argv("ffmpeg", spec_for("480p30-vp9", input=given), given, "out")
    assert option(vp9, "-c:a") == "libopus"


def test_a_whole_input_is_encoded_to_its_end_and_a_duration_cuts_it() -> None:
    """Without a duration a given input has no -t, so FFmpeg stops at its end; with one, -t says where."""
    given = "https://93.184.216.34/in.mp4"
    assert "-t" not in ff.encode_argv("ffmpeg", spec_for(input=given), given, "out.mp4")
    assert option(ff.encode_argv("ffmpeg", spec_for(input=given, duration=4), given, "out.mp4"), "-t") == "4"
    assert option(ff.encode_argv("ffmpeg", spec_for(), "testsrc2.mp4", "out.mp4"), "-t") == "10"


def test_the_generated_input_is_encoded_without_audio_options() -> None:
    """It has no audio: -an, and no audio bitrate for FFmpeg to call unused."""
    argv = ff.encode_argv("ffmpeg", spec_for(), "testsrc2.mp4", "out.mp4")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-map"] == ["0:v:0"]
    assert "-an" in argv and not {"-c:a", "-b:a"} & set(argv)


@pytest.mark.parametrize(("preset", "deadline", "cpu_used"), [
    ("ultrafast", "realtime", "8"), ("veryfast", "realtime", "6"), ("medium", "good", "3"), ("good", "good", "2"),
])
def test_vp9_presets_become_deadline_and_cpu_used(preset: str, deadline: str, cpu_used: str) -> None:
    """libvpx has no -preset; the speed knobs stand in for it."""
    argv = ff.encode_argv("ffmpeg", spec_for("480p30-vp9", preset=preset), "in", "out.webm")
    assert "-preset" not in argv
    assert (option(argv, "-deadline"), option(argv, "-cpu-used")) == (deadline, cpu_used)
    assert option(argv, "-f") == "webm"


def test_h265_quiets_x265_and_tags_hvc1_in_mp4_only() -> None:
    """x265's per-frame log would bury errors; hvc1 is an MP4 tag, not an FLV one."""
    argv = ff.encode_argv("ffmpeg", spec_for("1080p30-h265"), "in", "out.mp4")
    assert option(argv, "-x265-params") == "log-level=error"
    assert option(argv, "-tag:v") == "hvc1"
    assert "-tag:v" not in ff.encode_argv("ffmpeg", spec_for("1080p30-h265", output_mode="rtmp"), "in", "rtmp://h/x")


def test_fractional_rates_and_durations_are_written_as_ffmpeg_reads_them() -> None:
    """29.97 stays 29.97, 30.0 becomes 30."""
    argv = ff.encode_argv("ffmpeg", spec_for(fps="29.97", duration=1.5), "in", "out")
    assert option(argv, "-vf").startswith("fps=29.97,")
    assert option(argv, "-t") == "1.5"


def test_the_test_input_is_noisy_testsrc2_in_mp4() -> None:
    """Noise keeps the synthetic clip from being trivially compressible."""
    argv = ff.test_input_argv("ffmpeg", 320, 240, 30.0, 1.0, "/cache/x.mp4")
    assert option(argv, "-f") == "lavfi"
    assert option(argv, "-i").startswith("testsrc2=size=320x240:rate=30,noise=")
    assert (option(argv, "-t"), option(argv, "-crf"), argv[-3:]) == ("1", "18", ["-f", "mp4", "/cache/x.mp4"])


def test_find_ffmpeg_honours_an_executable_override(tmp_path: Path) -> None:
    """--ffmpeg wins over PATH and the wheel."""
    fake = tmp_path / "my-ffmpeg"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert ff.find_ffmpeg(str(fake)) == str(fake)


@pytest.mark.parametrize("make", ["missing", "not executable", "directory"])
def test_find_ffmpeg_rejects_an_override_it_cannot_run(tmp_path: Path, make: str) -> None:
    """A bad --ffmpeg is an error that names the flag, not a silent fallback."""
    target = tmp_path / "ffmpeg"
    if make == "not executable":
        target.write_text("")
    elif make == "directory":
        target.mkdir()
    with pytest.raises(ff.EncoderNotFound, match="--ffmpeg"):
        ff.find_ffmpeg(str(target))


def test_find_ffmpeg_falls_back_to_the_wheel_without_ffmpeg_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip install alone gives a working encoder."""
    monkeypatch.setenv("PATH", "")
    found = ff.find_ffmpeg()
    assert found == imageio_ffmpeg.get_ffmpeg_exe()
    assert os.access(found, os.X_OK)


def test_find_ffmpeg_says_how_to_get_one_when_there_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PATH binary and no usable wheel: the message names both remedies."""
    monkeypatch.setenv("PATH", "")

    def no_binary() -> str:
        raise RuntimeError("No ffmpeg exe could be found.")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    with pytest.raises(ff.EncoderNotFound, match="install ffmpeg.*--ffmpeg"):
        ff.find_ffmpeg()


# What `ffmpeg -hide_banner -i out.mp4 -map 0:v:0 -c copy -f null -` prints (FFmpeg 9.0.2), trimmed.
H264_LOG = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '/tmp/in.mp4':
  Metadata:
    major_brand     : isom
  Duration: 00:00:01.00, start: 0.000000, bitrate: 7834 kb/s
  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), \
320x240 [SAR 1:1 DAR 4:3], 7827 kb/s, 30 fps, 30 tbr, 15360 tbn (default)
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
Output #0, null, to 'pipe:':
  Stream #0:0(und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), \
999x999 [SAR 1:1 DAR 4:3], q=2-31, 7827 kb/s, 60 fps, 30 tbr, 15360 tbn (default)
"""
FLV_LOG = """Input #0, flv, from 'live.flv':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: vp9 (Profile 0), yuv420p(tv, progressive), 160x90, SAR 1:1 DAR 16:9, 29.97 tbr, 1k tbn
Stream mapping:
"""


def test_the_input_stream_line_gives_codec_size_rate_and_duration() -> None:
    """Only the input section counts: the output section repeats the stream with other values."""
    info = ff.parse_media_info(H264_LOG, progress_out_time=0.96, size_bytes=123)
    assert info == ff.MediaInfo(codec="h264", width=320, height=240, fps=30.0, duration=1.0, size_bytes=123)


def test_the_first_audio_stream_is_named() -> None:
    """A file with sound says which codec it has; one without says nothing."""
    with_audio = H264_LOG.replace(
        "Stream mapping:", "  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz\nStream mapping:"
    )
    info = ff.parse_media_info(with_audio, progress_out_time=1.0, size_bytes=1)
    assert info is not None and info.audio_codec == "aac"


def test_without_a_duration_header_the_copied_length_counts() -> None:
    """Recorded streams have no Duration; the rate falls back to tbr."""
    info = ff.parse_media_info(FLV_LOG, progress_out_time=4.5, size_bytes=1)
    assert info is not None
    assert (info.codec, info.width, info.height, info.fps, info.duration) == ("vp9", 160, 90, 29.97, 4.5)


def test_a_log_without_video_gives_none() -> None:
    """An audio-only file is not something we can report on."""
    log = "Input #0, wav, from 'a.wav':\n  Stream #0:0: Audio: pcm_s16le, 44100 Hz, stereo, s16, 1411 kb/s\n"
    assert ff.parse_media_info(log, progress_out_time=1.0, size_bytes=1) is None


def test_stderr_tail_keeps_the_last_non_empty_lines() -> None:
    """Carriage-return stats lines count as lines; blanks do not."""
    assert ff.stderr_tail(b"a\n\nb\rc\n\n\xffd\n", lines=3) == "b\nc\n\ufffdd"


def test_ffmpeg_failures_carry_the_reason_in_the_message() -> None:
    """The last stderr line is what a person needs to see in a job result."""
    exc = ff.ProbeFailed("cannot read 'x'", returncode=183, stderr_tail="noise\nmoov atom not found")
    assert str(exc) == "cannot read 'x' (ffmpeg exit code 183: moov atom not found)"
    assert exc.returncode == 183


def test_the_public_names_are_pinned() -> None:
    """Adding or dropping an export is a deliberate change."""
    assert sorted(ff.__all__) == [
        "EncoderNotFound", "FFmpegFailed", "MediaInfo", "ProbeFailed", "codec_flags", "decodes_cleanly",
        "encode_argv", "find_ffmpeg", "num", "parse_media_info", "probe_media", "stderr_tail", "test_input_argv",
    ]
    assert all(hasattr(ff, name) for name in ff.__all__)
