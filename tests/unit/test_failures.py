"""Whose fault a failed encode is, read from the real FFmpeg's stderr (agent/worker/failures.py).

Each case runs the FFmpeg the agent runs (``find_ffmpeg``) on a broken job and
hands its stderr to the classifier, so the patterns are checked against what
FFmpeg really prints, not against what we think it prints.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models import Job
from agent.scenarios import build_spec
from agent.worker.engines import ffmpeg as engine
from agent.worker.engines.ffmpeg import encode_argv, find_ffmpeg
from agent.worker.failures import input_file_problem, job_fault

# A broken job fails in well under a second; a hang is a bug in the case.
RUN_TIMEOUT_S = 30


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /<status>.mp4`` with that status and no body."""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_response(int(self.path.strip("/").split(".")[0]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a good clip, a sound-only file and a file of random bytes named .mp4."""
    directory = tmp_path_factory.mktemp("media")
    ffmpeg = find_ffmpeg()
    subprocess.run(engine.test_input_argv(ffmpeg, 320, 240, 30, 1, str(directory / "good.mp4")), check=True,
                   capture_output=True, timeout=RUN_TIMEOUT_S)
    subprocess.run([ffmpeg, "-nostdin", "-f", "lavfi", "-i", "sine", "-t", "1", str(directory / "sound.m4a")],
                   check=True, capture_output=True, timeout=RUN_TIMEOUT_S)
    (directory / "random.mp4").write_bytes(os.urandom(200_000))
    return directory


def encode(input_path: str, output: str, **params: object) -> str:
    """The stderr of the agent's own encode of ``input_path``; the encode must fail."""
    spec = build_spec(Job(id="f", scenario="240p30-h264", parameters={"duration": 1, **params}))
    argv = encode_argv(find_ffmpeg(), spec, input_path, output)
    return run_failing(argv)


def run_failing(argv: list[str]) -> str:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode != 0, "the case was meant to fail"
    return result.stderr.decode(errors="replace")


def test_a_missing_input_file_is_the_jobs_fault(media: Path, tmp_path: Path) -> None:
    """No such file or directory, on the input side."""
    missing = str(media / "missing.mp4")
    fault = job_fault(encode(missing, str(tmp_path / "out.mp4")), missing)
    assert "No such file or directory" in fault and "check that it exists" in fault


def test_a_file_of_random_bytes_is_the_jobs_fault(media: Path, tmp_path: Path) -> None:
    """Invalid data found when processing input: not media at all."""
    stderr = encode(str(media / "random.mp4"), str(tmp_path / "out.mp4"))
    assert "Invalid data found when processing input" in job_fault(stderr)


def test_an_input_without_video_is_the_jobs_fault(media: Path, tmp_path: Path) -> None:
    """The map of the first video stream matches nothing."""
    stderr = encode(str(media / "sound.m4a"), str(tmp_path / "out.mp4"))
    assert "has no video stream" in job_fault(stderr)


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_a_client_error_from_the_input_url_is_the_jobs_fault(http_base: str, tmp_path: Path, status: int) -> None:
    """Every 4xx, including those FFmpeg only calls 4XX."""
    url = f"{http_base}/{status}.mp4"
    assert job_fault(encode(url, str(tmp_path / "out.mp4")), url)


@pytest.mark.parametrize("argv_tail", [
    ["-vf", "scale=321:241", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    ["-c:v", "libx264", "-preset", "nonsense"],
], ids=["odd size", "unknown preset"])
def test_parameters_the_encoder_refuses_are_the_jobs_fault(media: Path, tmp_path: Path, argv_tail: list[str]) -> None:
    """Error while opening encoder: the job asked for something the encoder cannot do."""
    argv = [find_ffmpeg(), "-hide_banner", "-i", str(media / "good.mp4"), *argv_tail, "-f", "mp4",
            str(tmp_path / "out.mp4")]
    assert "encoder refused the job's parameters" in job_fault(run_failing(argv))


def test_a_server_error_from_the_input_url_is_not_the_jobs_fault(http_base: str, tmp_path: Path) -> None:
    """A 5xx may pass: retried elsewhere."""
    url = f"{http_base}/503.mp4"
    assert job_fault(encode(url, str(tmp_path / "out.mp4")), url) == ""


def test_an_unreachable_input_host_is_not_the_jobs_fault(tmp_path: Path) -> None:
    """Connection refused may be this worker's network."""
    url = "http://127.0.0.1:1/clip.mp4"
    assert job_fault(encode(url, str(tmp_path / "out.mp4")), url) == ""


def test_an_output_that_cannot_be_written_is_not_the_jobs_fault(media: Path, tmp_path: Path) -> None:
    """No such file or directory on the output side is this worker's problem."""
    good = str(media / "good.mp4")
    assert job_fault(encode(good, str(tmp_path / "gone" / "out.mp4")), good) == ""


def test_an_unreachable_rtmp_server_is_not_the_jobs_fault(media: Path) -> None:
    """The default RTMP server is the farm's own."""
    good = str(media / "good.mp4")
    stderr = encode(good, "rtmp://127.0.0.1:1/live/key", output_mode="rtmp")
    assert job_fault(stderr, good) == ""


def test_a_crash_is_not_the_jobs_fault() -> None:
    """Whatever an encoder says as it dies, unless it names the job, stays runtime_error."""
    assert job_fault("Segmentation fault (core dumped)") == ""


def test_older_ffmpeg_names_the_input_instead_of_saying_error_opening_input() -> None:
    """FFmpeg 5 and earlier write "<input>: <reason>"; only the input's own line counts."""
    assert job_fault("/in/clip.mp4: No such file or directory", "/in/clip.mp4")
    assert job_fault("/out/clip.mp4: No such file or directory", "/in/clip.mp4") == ""


def test_a_local_input_is_checked_before_anything_starts(tmp_path: Path) -> None:
    """Missing, a directory, or a FIFO (FFmpeg would block on it): each is one sentence naming the path."""
    good = tmp_path / "good.mp4"
    good.write_bytes(b"x")
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    assert input_file_problem(str(good)) == ""
    assert "does not exist" in input_file_problem(str(tmp_path / "missing.mp4"))
    assert str(tmp_path / "missing.mp4") in input_file_problem(str(tmp_path / "missing.mp4"))
    assert "not a regular file" in input_file_problem(str(tmp_path))
    assert "not a regular file" in input_file_problem(str(fifo))
