"""Scenario grammar and job parameter validation (agent/scenarios.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.models import Job
from agent.scenarios import DEFAULT_DURATION_S, EncodeSpec, JobRejected, Scenario, build_spec, default_bitrate
from agent.worker.engines.ffmpeg import encode_argv
from agent.worker.engines.gstreamer import pipeline_argv
from agent.worker.engines.hwaccel import HardwareEncoder, candidates


def spec_for(scenario: str = "720p30-h264", job_id: str = "job-1", **kwargs: Any) -> EncodeSpec:
    input_dirs = kwargs.pop("input_dirs", ())
    output_dir = kwargs.pop("output_dir", None)
    return build_spec(
        Job(id=job_id, scenario=scenario, parameters=kwargs), input_dirs=input_dirs, output_dir=output_dir
    )


def rejection(scenario: str = "720p30-h264", **kwargs: Any) -> JobRejected:
    with pytest.raises(JobRejected) as info:
        spec_for(scenario, **kwargs)
    return info.value


# --- the grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("480p30-vp9", (854, 480, 30, "vp9")),
        ("720p30-h264", (1280, 720, 30, "h264")),
        ("1080p60-h265", (1920, 1080, 60, "h265")),
        ("2K30-h264", (2560, 1440, 30, "h264")),
        ("4K60-h264", (3840, 2160, 60, "h264")),
        ("360p25-h264", (640, 360, 25, "h264")),
    ],
)
def test_scenario_names_give_16_9_size_rate_and_codec(name: str, expected: tuple[int, int, int, str]) -> None:
    """Each documented scenario reads as its 16:9 size, frame rate and codec."""
    s = Scenario.parse(name)
    assert (s.width, s.height, s.fps, s.codec) == expected


def test_scenario_names_ignore_case_and_accept_hevc() -> None:
    """Case does not matter and hevc is another name for h265."""
    assert Scenario.parse("4k60-HEVC") == Scenario.parse("2160p60-h265")
    assert Scenario.parse(" 1080P30-H264 ") == Scenario.parse("1080p30-h264")


@pytest.mark.parametrize(
    "name",
    ["999p30-h264x", "720p30-h263", "720p-h264", "p30-h264", "720p30", "721p30-h264", "720p0-h264",
     "720p241-h264", "8K30-h264", "4320p30 -h264", "720p30-h264;ls", "", "-720p30-h264", "10p30-h264"],
)
def test_bad_scenario_names_are_rejected_naming_the_scenario(name: str) -> None:
    """Anything off the grammar, an unknown codec or an odd height is a scenario error."""
    with pytest.raises(JobRejected) as info:
        Scenario.parse(name)
    assert info.value.field == "scenario"
    assert "scenario" in str(info.value)


@given(st.one_of(
    st.text(max_size=20),
    st.builds("{}p{}-{}".format, st.integers(0, 5000), st.integers(0, 300), st.sampled_from(["h264", "HEVC", "x"])),
))
def test_any_scenario_name_parses_within_bounds_or_is_rejected(name: str) -> None:
    """No name yields an odd or out-of-range size or rate."""
    try:
        s = Scenario.parse(name)
    except JobRejected as exc:
        assert exc.field == "scenario"
        return
    assert 16 <= s.height <= 4320 and s.height % 2 == 0 and s.width % 2 == 0
    assert 1 <= s.fps <= 240 and s.codec in ("h264", "h265", "vp9")


def test_unknown_codec_message_lists_the_codecs_we_have() -> None:
    """The message says what would have worked."""
    message = str(rejection("999p30-h264x"))
    assert "h264x" in message and "h265" in message and "vp9" in message


# --- defaults ----------------------------------------------------------------------


def test_a_bare_scenario_gets_the_documented_defaults() -> None:
    """No parameters: 10 s of a generated input, written to <job id>.mp4 as fast as possible."""
    spec = spec_for("720p30-h264", job_id="abc123")
    assert spec == EncodeSpec(
        scenario="720p30-h264", width=1280, height=720, fps=30.0, codec="h264", encoder="libx264",
        bitrate="2500k", preset="veryfast", duration=10.0, input="", output_name="abc123.mp4",
        output_mode="file", hardware="auto", rtmp_url="", timeout_sec=None, realtime=False,
    )


@pytest.mark.parametrize(("scenario", "encoder", "extension"), [
    ("480p30-vp9", "libvpx-vp9", ".webm"), ("1080p60-h265", "libx265", ".mp4"), ("4K60-h264", "libx264", ".mp4"),
])
def test_each_codec_has_its_encoder_and_container(scenario: str, encoder: str, extension: str) -> None:
    """VP9 goes into WebM, H.264 and H.265 into MP4."""
    spec = spec_for(scenario, job_id="j")
    assert spec.encoder == encoder
    assert spec.extension == extension
    assert spec.output_name == "j" + extension


HEIGHTS = [240, 360, 480, 720, 1080, 1440, 2160]


def kbps(height: int, fps: float, codec: str) -> int:
    return int(default_bitrate(Scenario.parse(f"{height}p30-h264").width, height, fps, codec)[:-1])


@pytest.mark.parametrize("height", HEIGHTS)
def test_default_bitrates_are_lower_for_vp9_and_h265_and_higher_at_60_fps(height: int) -> None:
    """The table follows the codecs' efficiency and the frame rate."""
    assert kbps(height, 30, "h265") < kbps(height, 30, "h264")
    assert kbps(height, 30, "vp9") < kbps(height, 30, "h264")
    assert kbps(height, 60, "h264") > kbps(height, 30, "h264")


def test_default_bitrates_grow_with_the_picture() -> None:
    """Each larger scenario size gets more bits than the one below it."""
    rates = [kbps(height, 30, "h264") for height in HEIGHTS]
    assert rates == sorted(set(rates))


def test_portrait_frames_get_the_rate_of_their_pixel_count() -> None:
    """1080x1920 has as many pixels as 1920x1080, so it gets the same bitrate."""
    assert default_bitrate(1080, 1920, 30, "h264") == default_bitrate(1920, 1080, 30, "h264")


def test_rtmp_mode_defaults_to_the_live_url_of_the_job_in_real_time() -> None:
    """The original agent streams to rtmp://<master host>:1935/live/<job id>."""
    job = Job(id="job-7", scenario="720p30-h264", parameters={"output_mode": "rtmp"})
    spec = build_spec(job, default_rtmp_host="master.example")
    assert spec.rtmp_url == "rtmp://master.example:1935/live/job-7"
    assert spec.realtime is True
    assert spec.container == "flv"


def test_a_stream_key_names_the_stream_on_either_url() -> None:
    """stream_key replaces the job id on the default URL and is appended to a given one."""
    assert spec_for(output_mode="rtmp", stream_key="cam1").rtmp_url == "rtmp://localhost:1935/live/cam1"
    given_url = spec_for(output_mode="rtmp", rtmp_url="rtmp://10.0.0.5/app/", stream_key="k")
    assert given_url.rtmp_url == "rtmp://10.0.0.5/app/k"


def test_file_mode_has_no_rtmp_url_even_when_one_is_given() -> None:
    """A file job writes a file; a stray rtmp_url is checked but not used."""
    assert spec_for(rtmp_url="rtmp://example.com/live/x").rtmp_url == ""


def test_job_ids_are_made_safe_for_file_names_and_urls() -> None:
    """An odd id from another master never becomes a path or an option."""
    spec = spec_for(job_id="../-x y/z", output_mode="rtmp")
    assert spec.output_name == "_-x_y_z.flv"
    assert spec.rtmp_url.endswith("/live/_-x_y_z")


# --- overrides ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2500k", "2500k"), ("5M", "5000k"), ("1.5m", "1500k"), (3000, "3000k"), ("800", "800k"), (750.4, "750k"),
])
def test_bitrates_are_normalised_to_kbps(value: object, expected: str) -> None:
    """k, M and bare numbers of kbit/s all end as <n>k."""
    assert spec_for(bitrate=value).bitrate == expected


def test_parameters_override_the_scenario() -> None:
    """Each known key replaces the scenario's value."""
    spec = spec_for(
        "720p30-h264", resolution="640x360", fps="25", codec="HEVC", preset="Slow", duration="2.5",
        output="clip.mkv", realtime="yes", resource_limits={"timeout_sec": 90},
    )
    assert (spec.width, spec.height, spec.fps, spec.codec, spec.encoder) == (640, 360, 25.0, "h265", "libx265")
    assert (spec.preset, spec.duration, spec.output_name) == ("slow", 2.5, "clip.mkv")
    assert spec.realtime is True and spec.timeout_sec == 90.0
    assert spec.bitrate == default_bitrate(640, 360, 25.0, "h265")


def test_vp9_takes_x264_style_and_its_own_preset_names() -> None:
    """Presets are checked against the encoder of the final codec."""
    assert spec_for("480p30-vp9", preset="ultrafast").preset == "ultrafast"
    assert spec_for("480p30-h264", codec="vp9", preset="realtime").preset == "realtime"


def test_unknown_keys_are_refused_naming_the_known_ones() -> None:
    """A typo does not run silently with the default: the message names it, a guess and every known key."""
    refused = rejection(presett="fast")
    assert refused.field == "parameters"
    assert "unknown key presett (did you mean preset?)" in str(refused)
    assert "known keys: bitrate, codec, deliver, duration" in str(refused)
    assert "unknown keys future_knob, presett" in str(rejection(future_knob="-rf /", presett="fast"))


def test_null_means_not_given() -> None:
    """null leaves the default."""
    assert spec_for(duration=None) == spec_for()


def test_local_inputs_resolve_inside_an_allowed_directory(tmp_path: Path) -> None:
    """Relative names are looked up in the input directories; absolute paths must be inside one."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "clip.mp4").write_bytes(b"x")
    dirs = [first, second]
    assert spec_for(input="clip.mp4", input_dirs=dirs).input == str((second / "clip.mp4").resolve())
    assert spec_for(input=str(second / "clip.mp4"), input_dirs=dirs).input == str((second / "clip.mp4").resolve())


def test_local_inputs_cannot_escape_by_dots_or_symlinks(tmp_path: Path) -> None:
    """Resolution follows .. and symlinks before the containment check."""
    allowed = tmp_path / "in"
    allowed.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (allowed / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    for value in ["../secret.mp4", str(tmp_path / "secret.mp4"), "link.mp4"]:
        assert rejection(input=value, input_dirs=[allowed]).field == "input"


def test_a_file_or_a_download_without_a_duration_is_encoded_whole(tmp_path: Path) -> None:
    """No duration with a local file or an http(s) input means all of it: duration None."""
    (tmp_path / "clip.mp4").write_bytes(b"x")
    assert spec_for(input="clip.mp4", input_dirs=[tmp_path]).duration is None
    assert spec_for(input="https://example.com/a.mp4").duration is None
    assert spec_for(input="clip.mp4", input_dirs=[tmp_path], duration=2).duration == 2.0


@pytest.mark.parametrize("url", ["rtmp://1.2.3.4/live/cam", "srt://1.2.3.4:9000", ""])
def test_a_live_stream_or_a_generated_clip_without_a_duration_gets_the_default(url: str) -> None:
    """A stream may never end, and a generated clip needs a length: both get the default ten seconds."""
    assert spec_for(input=url or None).duration == DEFAULT_DURATION_S


@pytest.mark.parametrize("url", [
    "http://example.com/a.mp4", "https://cdn.example.com:8443/v/a.mp4?sig=abc", "rtmp://1.2.3.4/live/cam",
    "srt://[2606:4700::1111]:9000?mode=caller",
])
def test_input_urls_with_known_schemes_and_sane_hosts_are_accepted(url: str) -> None:
    """Network inputs are passed on unchanged."""
    assert spec_for(input=url).input == url


# --- rejections name their field ----------------------------------------------------

BAD_VALUES: list[tuple[str, Any, str]] = [
    ("bitrate", "1M; rm -rf /", "bitrate"),
    ("bitrate", "-5M", "bitrate"),
    ("bitrate", "5G", "bitrate"),
    ("bitrate", 0, "bitrate"),
    ("bitrate", 10**9, "bitrate"),
    ("bitrate", True, "bitrate"),
    ("bitrate", float("nan"), "bitrate"),
    ("resolution", "1281x720", "resolution"),
    ("resolution", "8000x720", "resolution"),
    ("resolution", "1280*720", "resolution"),
    ("resolution", "1280x720\n", "resolution"),
    ("resolution", [1280, 720], "resolution"),
    ("fps", 0, "fps"),
    ("fps", 241, "fps"),
    ("fps", "30fps", "fps"),
    ("fps", True, "fps"),
    ("fps", float("inf"), "fps"),
    ("codec", "h264x", "codec"),
    ("codec", "-c:v", "codec"),
    ("preset", "fast; reboot", "preset"),
    ("preset", "realtime", "preset"),
    ("preset", "-preset", "preset"),
    ("duration", 0, "duration"),
    ("duration", -1, "duration"),
    ("duration", 86_401, "duration"),
    ("duration", "10s", "duration"),
    ("duration", "1e3", "duration"),
    ("duration", float("nan"), "duration"),
    ("input", "/etc/passwd", "input"),
    ("input", "file:///etc/passwd", "input"),
    ("input", "concat:a.mp4|b.mp4", "input"),
    ("input", "http://", "input"),
    ("input", "http://exa mple.com/a", "input"),
    ("input", "http://-bad.example/a", "input"),
    ("input", "http://example.com:99999/a", "input"),
    ("input", "-i", "input"),
    ("input", "http://example.com/a\r\nHost: evil", "input"),
    ("output", "../x.mp4", "output"),
    ("output", "a/b.mp4", "output"),
    ("output", ".hidden.mp4", "output"),
    ("output", "-y", "output"),
    ("output", "x;y.mp4", "output"),
    ("output", "x..mp4", "output"),
    ("output_mode", "udp", "output_mode"),
    ("rtmp_url", "http://example.com/live", "rtmp_url"),
    ("rtmp_url", "rtmp:///live", "rtmp_url"),
    ("rtmp_url", "rtmp://host/live\nx", "rtmp_url"),
    ("stream_key", "a/b", "stream_key"),
    ("stream_key", "-k", "stream_key"),
    ("hardware", "cuda", "hardware"),
    ("hardware", "-hwaccel", "hardware"),
    ("realtime", "maybe", "realtime"),
    ("realtime", 2, "realtime"),
    ("resource_limits", 5, "resource_limits"),
    ("resource_limits", {"timeout_sec": 0}, "resource_limits.timeout_sec"),
    ("resource_limits", {"timeout_sec": "soon"}, "resource_limits.timeout_sec"),
]


@pytest.mark.parametrize(("key", "value", "field"), BAD_VALUES)
def test_a_bad_value_is_rejected_naming_its_field(key: str, value: Any, field: str) -> None:
    """Every validator reports the parameter the submitter has to fix."""
    exc = rejection(**{key: value})
    assert exc.field == field
    assert str(exc).startswith(f"invalid {field}: ")


def test_presets_are_checked_against_the_final_codec() -> None:
    """placebo exists for x264, not for VP9."""
    assert rejection("720p30-h264", codec="vp9", preset="placebo").field == "preset"


# --- the argv never carries anything a job smuggled in -------------------------------

SCENARIOS = ["480p30-vp9", "720p30-h264", "1080p60-h265", "4K60-h264", "2k24-hevc"]
JUNK = [
    "-y", "-re", "--", "1M; rm -rf /", "../a", "\n", "line\nbreak", "x\x00y", "a;b", " 720 ", "rtmp://-x/y",
    "concat:a|b", "file:///etc/passwd",
]
junk = st.one_of(
    st.sampled_from(JUNK),
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.dictionaries(st.text(max_size=4), st.integers()),
)
# Plausible values per key, so that many generated jobs pass and reach encode_argv.
PLAUSIBLE = {
    "resolution": st.builds(
        "{}x{}".format, st.integers(4, 4000).map(lambda n: 2 * n), st.integers(4, 2200).map(lambda n: 2 * n)
    ),
    "fps": st.one_of(st.integers(0, 300), st.sampled_from(["30", "29.97", "0.5"])),
    "codec": st.sampled_from(["h264", "h265", "hevc", "vp9", "VP9", "av1"]),
    "bitrate": st.one_of(st.from_regex(r"\d{1,6}(\.\d{1,2})?[kKmM]?", fullmatch=True), st.integers(0, 10**6)),
    "preset": st.sampled_from(["ultrafast", "veryfast", "medium", "placebo", "realtime", "good", "Slow"]),
    "duration": st.one_of(st.floats(0, 100_000), st.from_regex(r"\d{1,6}(\.\d{1,3})?", fullmatch=True)),
    "input": st.sampled_from(["a.mp4", "http://example.com/a.mp4", "srt://10.0.0.1:9000", "rtmp://h/x?k=v"])
    | st.sampled_from(JUNK),
    "output": st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
    "output_mode": st.sampled_from(["file", "rtmp", "RTMP"]),
    "rtmp_url": st.sampled_from(["rtmp://example.com/live", "rtmps://10.0.0.1:1936/app/", "rtmp://[::1]/x"])
    | st.sampled_from(JUNK),
    "stream_key": st.from_regex(r"[A-Za-z0-9_.~=&?+-]{1,12}", fullmatch=True),
    "realtime": st.one_of(st.booleans(), st.sampled_from(["yes", "no", "true", "0"])),
    "hardware": st.sampled_from(["auto", "none", "nvenc", "QSV", "vaapi", "cuda"]),
    "resource_limits": st.fixed_dictionaries({"timeout_sec": st.one_of(st.floats(-1, 1e6), st.none())}),
}
# Mostly plausible keys, plus up to two junk values under known or unknown keys.
parameter_dicts = st.builds(
    lambda plausible, bad: {**plausible, **bad},
    st.fixed_dictionaries({}, optional=PLAUSIBLE),
    st.dictionaries(st.sampled_from(sorted(PLAUSIBLE)) | st.text(max_size=8), junk, max_size=2),
)
# ffmpeg options encode_argv may emit, with how many values follow each.
OPTION_ARITY = {
    "-hide_banner": 0, "-y": 0, "-nostats": 0, "-an": 0, "-re": 0,
    "-progress": 1, "-i": 1, "-map": 1, "-t": 1, "-vf": 1, "-c:v": 1, "-b:v": 1, "-maxrate": 1, "-bufsize": 1,
    "-g": 1, "-preset": 1, "-x265-params": 1, "-tag:v": 1, "-deadline": 1, "-cpu-used": 1, "-row-mt": 1,
    "-pix_fmt": 1, "-c:a": 1, "-b:a": 1, "-f": 1,
    "-init_hw_device": 1, "-filter_hw_device": 1, "-vaapi_device": 1, "-protocol_whitelist": 1,
}



@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("inputs")
    (directory / "a.mp4").write_bytes(b"")
    return directory


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=st.sampled_from(SCENARIOS), params=parameter_dicts, hardware=st.sampled_from([None, *candidates()]))
def test_any_parameters_give_a_rejection_or_an_argv_of_clean_values(
    scenario: str, params: dict[str, Any], hardware: HardwareEncoder | None, input_dir: Path
) -> None:
    """Whatever a job holds, each option is ours and no value looks like an option or breaks a line."""
    try:
        spec = build_spec(Job(id="job-1", scenario=scenario, parameters=params), input_dirs=[input_dir])
    except JobRejected as exc:
        event(f"rejected: {exc.field}")
        assert exc.field
        return
    event(f"accepted: {spec.output_mode}, input {'given' if spec.input else 'generated'}")
    assert spec.width % 2 == 0 and spec.height % 2 == 0
    assert (spec.duration is None and spec.input) or 0 < (spec.duration or 0) <= 86_400
    assert math.isfinite(spec.fps)
    input_path = spec.input or "/cache/generated.mp4"
    output = spec.rtmp_url if spec.output_mode == "rtmp" else f"/work/{spec.output_name}"
    usable = hardware if hardware is not None and hardware.codec == spec.codec else None
    argv = encode_argv("/usr/bin/ffmpeg", spec, input_path, output, hardware=usable)
    assert argv[-1] == output
    for item in argv[1:]:
        assert not any(c in item for c in "\n\r\0;"), item
    i = 1
    while i < len(argv) - 1:
        option = argv[i]
        assert option in OPTION_ARITY, f"unexpected argv element {option!r}"
        for value in argv[i + 1 : i + 1 + OPTION_ARITY[option]]:
            assert not value.startswith("-"), (option, value)
        i += 1 + OPTION_ARITY[option]
    assert i == len(argv) - 1
    assert not output.startswith("-")


# GStreamer tokens: an element, a link, caps, or name=value with a number, a fraction,
# a boolean, or a double-quoted string whose quotes and backslashes are escaped.
GST_ELEMENTS = {
    "filesrc", "decodebin", "videoconvert", "videoscale", "videorate", "x264enc", "x265enc", "vp9enc",
    "h264parse", "h265parse", "progressreport", "mp4mux", "webmmux", "flvmux", "filesink", "rtmp2sink",
}
GST_PROPERTY = re.compile(r'^[a-z][a-z0-9-]*=(?:-?\d+|\d+/\d+|true|false|"(?:[^"\\]|\\["\\])*")$')
GST_CAPS = re.compile(r"^video/x-raw,format=I420,width=\d+,height=\d+,framerate=\d+/\d+,pixel-aspect-ratio=1/1$")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=st.sampled_from(SCENARIOS), params=parameter_dicts, path=st.text(max_size=30))
def test_any_accepted_job_gives_a_gstreamer_pipeline_of_known_tokens(
    scenario: str, params: dict[str, Any], path: str, input_dir: Path
) -> None:
    """Each token is a known element, a link, our caps or a property with a clean or quoted value."""
    try:
        spec = build_spec(Job(id="job-1", scenario=scenario, parameters=params), input_dirs=[input_dir])
    except JobRejected:
        return
    work_path = "/work dir/" + path  # operators' paths may hold anything; quoting must cope
    output = spec.rtmp_url if spec.output_mode == "rtmp" else work_path
    argv = pipeline_argv("/usr/bin/gst-launch-1.0", spec, work_path, output)
    assert argv[1] == "-e"
    for token in argv[2:]:
        assert token == "!" or token in GST_ELEMENTS or GST_CAPS.match(token) or GST_PROPERTY.match(token), token
    locations = [t.split("=", 1)[1] for t in argv if t.startswith("location=")]
    unquoted = [re.sub(r"\\(.)", r"\1", value[1:-1]) for value in locations]
    assert unquoted == [work_path, output]


@pytest.fixture
def output_root(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "shows").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    return root


def test_outputs_go_under_the_operator_directory_per_job_by_default(output_root: Path) -> None:
    """With --output-dir, a plain name lands in <dir>/<job id>/, a path inside the directory as given."""
    plain = spec_for(job_id="j1", output="clip.mp4", output_dir=output_root)
    assert (plain.output_dir, plain.output_name) == (str(output_root.resolve() / "j1"), "clip.mp4")
    default = spec_for(job_id="j1", output_dir=output_root)
    assert (default.output_dir, default.output_name) == (str(output_root.resolve() / "j1"), "j1.mp4")
    nested = spec_for(output="shows/ep1/clip.mp4", output_dir=output_root)
    assert nested.output_dir == str(output_root.resolve() / "shows" / "ep1")
    absolute = spec_for(output=str(output_root / "shows" / "a.mp4"), output_dir=output_root)
    assert (absolute.output_dir, absolute.output_name) == (str(output_root.resolve() / "shows"), "a.mp4")


def test_without_an_output_directory_paths_are_refused(output_root: Path) -> None:
    """Only a plain file name is allowed when the operator allowed no directory."""
    assert rejection(output="shows/clip.mp4").field == "output"
    assert rejection(output=str(output_root / "a.mp4")).field == "output"


PATH_PARTS = st.sampled_from(["..", ".", "", "shows", "escape", "a.mp4", "-x", ".h", "b c", "..."])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(PATH_PARTS, min_size=1, max_size=5), absolute=st.booleans())
def test_no_output_path_escapes_the_operator_directory(parts: list[str], absolute: bool, output_root: Path) -> None:
    """Dots, symlinks and odd names either stay inside the directory or are rejected naming output."""
    value = "/".join(parts)
    if absolute:
        value = f"{output_root}/{value}"
    try:
        spec = spec_for(output=value, output_dir=output_root)
    except JobRejected as exc:
        assert exc.field == "output"
        return
    final = Path(spec.output_dir, spec.output_name)
    assert final.resolve().is_relative_to(output_root.resolve())
    assert Path(spec.output_dir).resolve() == Path(spec.output_dir), "symlinks are resolved before the check"


def test_hardware_choice_is_validated_and_defaults_to_auto() -> None:
    """auto uses a detected encoder, none insists on software; names are case-blind."""
    assert spec_for().hardware == "auto"
    assert spec_for(hardware="NVENC").hardware == "nvenc"
    assert spec_for(hardware="none").hardware == "none"


def test_the_public_names_are_pinned() -> None:
    """Adding or dropping an export is a deliberate change."""
    import agent.scenarios

    assert sorted(agent.scenarios.__all__) == [
        "CODECS", "DEFAULT_DURATION_S", "EncodeSpec", "HARDWARE_CHOICES", "JobRejected", "PARAMETERS", "Scenario",
        "VP9_PRESETS", "build_spec", "default_bitrate",
    ]


def test_a_hardware_codec_name_asks_for_that_vendor_with_the_plain_codec() -> None:
    """``h264_nvenc`` is h264 on NVENC (the master routes it to a GPU node); unknown suffixes are refused."""
    spec = build_spec(Job(id="j", scenario="720p30-h264", parameters={"codec": "hevc_qsv"}))
    assert (spec.codec, spec.hardware) == ("h265", "qsv")
    with pytest.raises(JobRejected, match="codec"):
        build_spec(Job(id="j", scenario="720p30-h264", parameters={"codec": "h264_cuda"}))


def test_an_uploaded_input_is_named_by_its_sha256_and_delivered_to_the_master_by_default() -> None:
    """input=artifact:<64 hex> is taken as is and delivers to the master; a malformed name or deliver is refused."""
    sha = "ab" * 32
    spec = spec_for("720p30-h264", input=f"artifact:{sha}")
    assert (spec.input, spec.deliver) == (f"artifact:{sha}", "master")
    assert spec_for("720p30-h264", input=f"artifact:{sha}", deliver="none").deliver == "none"
    assert spec_for("720p30-h264").deliver == "none"
    assert rejection(input="artifact:xyz").field == "input"
    assert "must be one of master, none" in str(rejection(deliver="ftp"))


def test_outputs_may_be_delivered_to_an_http_url_or_an_s3_prefix_and_inputs_read_from_s3() -> None:
    """deliver takes http(s) and s3:// URLs, input takes s3://bucket/key; a bad bucket or a bare bucket input is refused."""
    assert spec_for("720p30-h264", deliver="https://dav.example/out/?sig=1").deliver == "https://dav.example/out/?sig=1"
    assert spec_for("720p30-h264", deliver="s3://media-out/renders/").deliver == "s3://media-out/renders/"
    spec = spec_for("720p30-h264", input="s3://media-in/clips/a.mp4")
    assert (spec.input, spec.duration) == ("s3://media-in/clips/a.mp4", None)
    assert rejection(deliver="s3://Bad_Bucket/x").field == "deliver"
    assert rejection(deliver="ftp://host/x").field == "deliver"
    assert "s3://<bucket>/<key>" in str(rejection(input="s3://media-in/"))
    assert "deliver=https://dav.example/ needs output_mode=file" in str(
        rejection(deliver="https://dav.example/", output_mode="rtmp")
    )
