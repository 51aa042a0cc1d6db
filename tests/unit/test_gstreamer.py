"""GStreamer pipelines built from the spec, without running them (agent/worker/engines/gstreamer.py)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.models import Job
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.engines import gstreamer as gst


def spec_for(scenario: str = "720p30-h264", **params: Any) -> EncodeSpec:
    return build_spec(Job(id="job-1", scenario=scenario, parameters=params))


def stages(argv: list[str]) -> list[list[str]]:
    """The pipeline's stages: the tokens between the links."""
    result: list[list[str]] = [[]]
    for token in argv[2:]:
        if token == "!":
            result.append([])
        else:
            result[-1].append(token)
    return result


def elements(argv: list[str]) -> list[str]:
    """Each stage's first token: an element name or caps."""
    return [stage[0] for stage in stages(argv)]


def properties(argv: list[str], element: str) -> dict[str, str]:
    stage = next(s for s in stages(argv) if s[0] == element)
    return dict(token.split("=", 1) for token in stage[1:])


@pytest.mark.parametrize(("scenario", "encoder", "parser", "muxer"), [
    ("480p30-vp9", "vp9enc", None, "webmmux"),
    ("720p30-h264", "x264enc", "h264parse", "mp4mux"),
    ("1080p60-h265", "x265enc", "h265parse", "mp4mux"),
])
def test_each_codec_gets_its_encoder_parser_and_muxer(
    scenario: str, encoder: str, parser: str | None, muxer: str
) -> None:
    """decode, convert, scale, rate, caps, encode, parse, report, mux, sink: in that order."""
    spec = spec_for(scenario)
    argv = gst.pipeline_argv("gst-launch-1.0", spec, "/in.mp4", "/out" + spec.extension)
    caps = (
        f"video/x-raw,format=I420,width={spec.width},height={spec.height},"
        f"framerate={int(spec.fps)}/1,pixel-aspect-ratio=1/1"
    )
    assert argv[:2] == ["gst-launch-1.0", "-e"]
    assert elements(argv) == [
        "filesrc", "decodebin", "videoconvert", "videoscale", "videorate", caps, encoder,
        *([parser] if parser else []), "progressreport", muxer, "filesink",
    ]
    assert properties(argv, "filesink") == {"location": f'"/out{spec.extension}"', "sync": "false"}


def test_x264_gets_the_bitrate_preset_and_keyframe_interval() -> None:
    """kbit/s, the preset by name, and a keyframe every two seconds as the FFmpeg engine does."""
    argv = gst.pipeline_argv("g", spec_for(bitrate="1M", preset="fast", fps=25), "i", "o")
    assert properties(argv, "x264enc") == {"bitrate": "1000", "speed-preset": '"fast"', "key-int-max": "50"}


def test_vp9_gets_bits_per_second_and_the_speed_knobs_of_its_preset() -> None:
    """libvpx takes bit/s; the x264-style preset maps to deadline and cpu-used as in FFmpeg."""
    argv = gst.pipeline_argv("g", spec_for("480p30-vp9", bitrate="700k", preset="ultrafast"), "i", "o")
    assert properties(argv, "vp9enc") == {
        "target-bitrate": "700000", "deadline": "1", "cpu-used": "8", "keyframe-max-dist": "60", "row-mt": "true",
    }


def test_rtmp_muxes_streamable_flv_into_rtmp2sink_in_real_time() -> None:
    """A stream is paced by the sink's clock, like FFmpeg's -re."""
    spec = spec_for(output_mode="rtmp")
    argv = gst.pipeline_argv("g", spec, "i", spec.rtmp_url)
    assert elements(argv)[-2:] == ["flvmux", "rtmp2sink"]
    assert properties(argv, "flvmux") == {"streamable": "true"}
    assert properties(argv, "rtmp2sink") == {"location": '"rtmp://localhost:1935/live/job-1"', "sync": "true"}


def test_odd_frame_rates_become_exact_fractions() -> None:
    """29.97 is 2997/100, not a rounded 30."""
    argv = gst.pipeline_argv("g", spec_for(fps="29.97"), "i", "o")
    assert "framerate=2997/100," in elements(argv)[5]


def test_quotes_and_backslashes_in_paths_are_escaped() -> None:
    """gst-launch re-parses its arguments, so a path cannot end the quoted value early."""
    argv = gst.pipeline_argv("g", spec_for(), 'a "b" \\c', "o")
    assert properties(argv, "filesrc") == {"location": '"a \\"b\\" \\\\c"'}


INSTALLED = gst.GStreamer(launch="/usr/bin/gst-launch-1.0", elements=frozenset(
    gst.required_elements(spec_for()) + gst.required_elements(spec_for("480p30-vp9"))
))


@pytest.mark.parametrize(("spec", "generated", "reason"), [
    (spec_for(), True, ""),
    (spec_for(), False, "only encode generated inputs"),
    (spec_for("480p30-vp9", output_mode="rtmp"), True, "cannot put vp9 into flv"),
    (spec_for("720p30-h265"), True, "not installed: x265enc, h265parse"),
])
def test_what_gstreamer_cannot_do_is_said_in_words(spec: EncodeSpec, generated: bool, reason: str) -> None:
    """The reason ends up in the result as the fallback error."""
    said = INSTALLED.unsupported(spec, generated_input=generated)
    assert (reason in said) if reason else said == ""


async def test_a_missing_gst_launch_means_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without GStreamer on PATH the worker runs FFmpeg only."""
    monkeypatch.setenv("PATH", "")
    assert await gst.find_gstreamer() is None
