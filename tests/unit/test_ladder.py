"""Ladders as plain code: the rungs a job's parameters give, the mode, and the FFmpeg command lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.ladder import MAX_RUNGS, SEGMENT_S, Ladder, Rung, choose_mode
from agent.master.validation import validate_request
from agent.models import Job, JobRequest
from agent.scenarios import EncodeSpec, JobRejected, build_spec
from agent.worker.engines.ffmpeg_ladder import Variant, ladder_plan, rewrite_master_playlist, video_codec_string
from agent.worker.package_check import Bitrate

THREE = "360p30-h264,240p30-h264@300k,144p30-h264@150k"
STAGE = Path("/work/stage")


def spec(ladder: str = THREE, **params: Any) -> EncodeSpec:
    job = Job(id="job-1", scenario="360p30-h264", parameters={"ladder": ladder, **params})
    return build_spec(job, input_dirs=[Path("/media")])


def rejection(**params: Any) -> str:
    with pytest.raises(JobRejected) as caught:
        build_spec(Job(id="job-1", scenario="360p30-h264", parameters=params))
    return str(caught.value)


def test_rungs_are_scenarios_with_an_optional_bitrate_in_the_order_given() -> None:
    """@300k sets a rung's bitrate; a rung without one gets its scenario's default."""
    ladder = Ladder.parse(THREE)
    assert [(r.index, r.width, r.height, r.fps, r.bitrate) for r in ladder.rungs] == [
        (1, 640, 360, 30.0, "800k"), (2, 426, 240, 30.0, "300k"), (3, 256, 144, 30.0, "150k"),
    ]
    assert [r.name for r in ladder.rungs] == ["1-360p30", "2-240p30", "3-144p30"]
    assert ladder.package == "hls" and ladder.total_kbps == 1250


def test_a_rung_with_a_bad_bitrate_is_refused_naming_the_rung() -> None:
    """The message names the rung by position and as written, then what is wrong with it."""
    with pytest.raises(JobRejected) as caught:
        Ladder.parse("1080p30-h264,720p30-h264@abc")
    assert caught.value.field == "ladder"
    assert str(caught.value).startswith("invalid ladder: rung 2 (720p30-h264@abc): bitrate 'abc' must look like")


@pytest.mark.parametrize(("text", "expected"), [
    ("720p30-h264,720x", "rung 2 (720x): scenario '720x' does not read as"),
    ("720p30-h264@", "rung 1 (720p30-h264@): bitrate is missing after '@'"),
    ("720p30-h264,480p30-h264@1", "rung 2 (480p30-h264@1): bitrate '1' must be within"),
    ("720p30-h264,720p30-h264@2500k", "rung 2 (720p30-h264@2500k) repeats rung 1 (720p30-h264)"),
    ("480p30-vp9", "rung 1 (480p30-vp9): package=hls carries h264 or h265; use package=dash"),
    (",".join(f"{h}p30-h264" for h in range(144, 144 + 2 * (MAX_RUNGS + 1), 2)), "give 1 to 8"),
])
def test_bad_ladders_are_refused_with_what_to_change(text: str, expected: str) -> None:
    """Each refusal says which rung and why."""
    with pytest.raises(JobRejected, match="^invalid ladder: ") as caught:
        Ladder.parse(text)
    assert expected in str(caught.value)


def test_a_job_with_a_ladder_gets_a_package_directory_named_for_it() -> None:
    """The output is <job id>.<package>; the scenario still says what the generated source is."""
    dash = spec(package="dash", preset="fast")
    assert dash.ladder is not None and dash.ladder.package == "dash" and dash.ladder.preset == "fast"
    assert dash.output_name == "job-1.dash"
    assert (dash.width, dash.height) == (640, 360)
    assert spec("480p30-vp9,240p30-h265", package="files").ladder is not None


@pytest.mark.parametrize(("params", "expected"), [
    ({"ladder": THREE, "bitrate": "3M"}, "invalid bitrate: does not apply to a ladder: give each rung's bitrate"),
    ({"ladder": THREE, "resolution": "1280x720"}, "invalid resolution: does not apply to a ladder"),
    ({"ladder": THREE, "output_mode": "rtmp"}, "invalid output_mode: a ladder is written as a package"),
    ({"ladder": THREE, "hardware": "nvenc"}, "invalid hardware: ladder rungs are encoded in software"),
    ({"ladder": THREE, "package": "zip"}, "invalid package: 'zip' must be one of hls, dash, files"),
    ({"package": "hls"}, "invalid package: needs a ladder"),
    ({"ladder": "480p30-vp9,240p30-h264", "package": "dash", "preset": "good"}, "invalid preset: 'good' is not a h264"),
    ({"ladder": THREE, "input": "rtmp://example.com/live/x"}, "invalid ladder: a ladder needs a file input"),
])
def test_parameters_that_describe_one_encode_are_refused_with_a_ladder(params: dict[str, Any], expected: str) -> None:
    """Per-encode settings belong in each rung; the message says how to write them there."""
    assert rejection(**params).startswith(expected)


def test_the_master_refuses_a_bad_rung_at_submit() -> None:
    """The master runs the agent's check, so a bad rung never reaches a worker."""
    with pytest.raises(JobRejected, match=r"rung 2 \(720p30-h264@abc\)"):
        validate_request(JobRequest.from_json({"scenario": "720p30-h264",
                                               "parameters": {"ladder": "1080p30-h264,720p30-h264@abc"}}))


def test_the_mode_is_the_setting_and_auto_picks_one_decode() -> None:
    """single and split as asked; auto runs one process, and the reason says so."""
    ladder = Ladder.parse(THREE)
    assert choose_mode("split", ladder) == ("split", "--ladder-mode split")
    assert choose_mode("single", ladder)[0] == "single"
    mode, why = choose_mode("auto", ladder)
    assert mode == "single" and why.startswith("auto: one decode")


def video_options(argv: list[str], output: str) -> list[str]:
    """The options of one output: from after the previous output (or the filter graph) to its file name."""
    end = argv.index(output)
    start = max(i for i, arg in enumerate(argv[:end]) if arg == "-map")
    return argv[start + 2:end]


def test_single_mode_decodes_once_and_splits_the_picture_to_every_rung() -> None:
    """One argv: split=3, one scaled branch per rung, three encoders and the audio once."""
    plan = ladder_plan("ffmpeg", spec(), "/media/clip.mp4", stage_dir=STAGE, mode="single", audio=True)
    [argv] = plan.encodes
    assert argv.count("-i") == 1
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.startswith("[0:v:0]split=3[s1][s2][s3];")
    assert "[s2]fps=30,scale=426:240,setdar=640/360[v2]" in graph
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "-map"] == ["[v1]", "[v2]", "[v3]", "0:a:0"]
    assert argv[-1] == str(STAGE / "audio.m4a")


def test_split_mode_runs_a_process_per_rung_with_the_same_encoder_options() -> None:
    """N argvs, each decoding the input; only the first encodes the audio; options match single mode's."""
    single = ladder_plan("ffmpeg", spec(), "/media/clip.mp4", stage_dir=STAGE, mode="single", audio=True)
    split = ladder_plan("ffmpeg", spec(), "/media/clip.mp4", stage_dir=STAGE, mode="split", audio=True)
    assert len(split.encodes) == 3 and [r.index for (r,) in split.encode_rungs] == [1, 2, 3]
    assert ["0:a:0" in argv for argv in split.encodes] == [True, False, False]
    for argv, name in zip(split.encodes, ["1-360p30", "2-240p30", "3-144p30"]):
        output = str(STAGE / f"{name}.mp4")
        assert video_options(argv, output)[2:] == video_options(single.encodes[0], output)
    assert split.package == single.package


def test_every_rung_has_a_keyframe_at_each_segment_boundary_and_nowhere_else() -> None:
    """-g and -keyint_min are a segment's frames, scene cuts add none, and keyframes are forced on the grid."""
    plan = ladder_plan("ffmpeg", spec("360p60-h264,240p30-h265", package="dash"), "/media/clip.mp4",
                       stage_dir=STAGE, mode="split", audio=False)
    x264, x265 = plan.encodes
    assert x264[x264.index("-g") + 1] == x264[x264.index("-keyint_min") + 1] == str(round(60 * SEGMENT_S))
    assert x264[x264.index("-sc_threshold") + 1] == "0"
    assert "scenecut=0:open-gop=0" in x265[x265.index("-x265-params") + 1]
    assert all(argv[argv.index("-force_key_frames") + 1] == f"expr:gte(t,n_forced*{SEGMENT_S:g})" for argv in plan.encodes)


def test_the_package_is_one_stream_copy_per_kind() -> None:
    """HLS: a variant per rung in one audio group; DASH: video and audio adaptation sets; files: an MP4 per rung."""
    hls = ladder_plan("ffmpeg", spec(), "/m/c.mp4", stage_dir=STAGE, mode="single", audio=True).package
    assert hls[hls.index("-var_stream_map") + 1] == (
        "v:0,name:1-360p30,agroup:audio v:1,name:2-240p30,agroup:audio v:2,name:3-144p30,agroup:audio "
        "a:0,name:audio,agroup:audio,default:yes"
    )
    assert hls[hls.index("-c") + 1] == "copy" and hls[-1] == "%v/index.m3u8"
    dash = ladder_plan("ffmpeg", spec(package="dash"), "/m/c.mp4", stage_dir=STAGE, mode="single",
                       audio=False).package
    assert dash[dash.index("-adaptation_sets") + 1] == "id=0,streams=v" and dash[-1] == "manifest.mpd"
    files = ladder_plan("ffmpeg", spec(package="files"), "/m/c.mp4", stage_dir=STAGE, mode="single",
                        audio=True).package
    assert [arg for arg in files if arg.endswith(".mp4") and not arg.startswith("/")] == [
        "1-360p30.mp4", "2-240p30.mp4", "3-144p30.mp4",
    ]
    assert files.count("3:a:0") == 3


def test_the_master_playlist_gets_measured_rates_with_audio_codecs_and_the_frame_rate() -> None:
    """BANDWIDTH and AVERAGE-BANDWIDTH are video plus audio; CODECS names both; other lines stay."""
    ffmpeg_wrote = "\n".join([
        "#EXTM3U",
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="group_audio",NAME="audio_1",DEFAULT=YES,URI="audio/index.m3u8"',
        '#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",'
        'AUDIO="group_audio"',
        "1-360p30/index.m3u8",
    ])
    variant = Variant(Bitrate(900_000, 700_000), 30.0, "avc1.64001e")
    rewritten = rewrite_master_playlist(ffmpeg_wrote, {"1-360p30/index.m3u8": variant}, Bitrate(130_000, 128_000))
    assert rewritten.splitlines()[2] == (
        '#EXT-X-STREAM-INF:BANDWIDTH=1030000,AVERAGE-BANDWIDTH=828000,RESOLUTION=640x360,'
        'CODECS="avc1.64001e,mp4a.40.2",AUDIO="group_audio",FRAME-RATE=30.000'
    )
    assert rewritten.splitlines()[:2] == ffmpeg_wrote.splitlines()[:2]


def test_a_rung_keyframe_interval_is_one_segment() -> None:
    """Two seconds of frames at the rung's own rate."""
    assert Rung.parse(1, "720p60-h264").keyframe_interval == 120
    assert Rung.parse(1, "720p25-h264").keyframe_interval == 50


def test_codec_strings_are_read_from_the_decoder_configuration() -> None:
    """avcC: profile, constraints, level in hex; hvcC: hvc1.<profile>.<reversed compatibility>.<tier level>.<flags>."""
    avc = b"....avcC\x01\x64\x00\x1f\xff"
    assert video_codec_string(avc) == "avc1.64001f"
    # Main profile, compatibility 0x60000000, constraint 0x90 then zeros, level 93 (3.1).
    hvc = b"....hvcC\x01\x01\x60\x00\x00\x00\x90\x00\x00\x00\x00\x00\x5d"
    assert video_codec_string(hvc) == "hvc1.1.6.L93.90"
    with pytest.raises(ValueError, match="no avcC or hvcC"):
        video_codec_string(b"ftypisom")
