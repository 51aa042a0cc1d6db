"""No request a job causes reaches a private address the worker did not allow (agent/worker/netguard.py, fetch.py).

Each case points a job at probe servers on 127.0.0.1 that count every TCP
connection they accept; a forbidden probe must count zero, and the job must
fail as ``user_error`` with a message naming the host, its address's kind
and the flag. Jobs run through :class:`JobRunner` with real FFmpeg; one case
goes through a real master and agent process.

Network rules: every server binds 127.0.0.1 port 0 and is cancelled with the
test's nursery; each step has a timeout.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from agent.client import MasterClient
from agent.config import AgentConfig
from agent.models import FailureReason, Job, JobRequest, JobResult, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg, probe_media
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.netguard import AllowList, address_kind
from tests.support import Processes, run_job, start_agent, start_master, wait_for_jobs

STEP_TIMEOUT_S = 60

Route = tuple[int, dict[str, str], bytes]


@attrs.define
class Probe:
    """A TCP server on 127.0.0.1 that counts connections and answers HTTP GETs from ``routes``."""

    port: int = 0
    hits: int = 0
    routes: dict[str, Route] = attrs.field(factory=dict)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def entry(self) -> str:
        """Its allow-list entry: this address on this port, and no other port."""
        return f"127.0.0.1:{self.port}"

    async def handle(self, stream: trio.SocketStream) -> None:
        self.hits += 1
        async with stream:
            head = b""
            with trio.move_on_after(STEP_TIMEOUT_S):
                while b"\r\n\r\n" not in head:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    head += chunk
            path = head.split(b" ", 2)[1].decode()
            status, headers, body = self.routes.get(path, (404, {}, b"not found"))
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


StartProbe = Callable[[], Awaitable[Probe]]


@pytest.fixture
def start_probe(nursery: trio.Nursery) -> StartProbe:
    async def start() -> Probe:
        probe = Probe()
        listeners = await nursery.start(partial(trio.serve_tcp, probe.handle, 0, host="127.0.0.1"))
        probe.port = listeners[0].socket.getsockname()[1]
        return probe

    return start


async def run_job_here(tmp_path: Path, *, inputs: str = "", outputs: str = "", **params: Any) -> JobResult:
    settings = AgentConfig(
        work_dir=tmp_path / "work",
        allow_private_inputs=AllowList.parse([inputs] if inputs else []),
        allow_private_outputs=AllowList.parse([outputs] if outputs else []),
    )
    runner = JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"))
    job = Job(id="job-1", scenario="144p30-h264", parameters={"duration": 1, **params})
    with trio.fail_after(STEP_TIMEOUT_S):
        return await run_job(runner, job)


def assert_refused(result: JobResult, *words: str) -> None:
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value), result.error
    for word in words:
        assert word in result.error


async def make_clip(path: Path, *extra: str) -> None:
    """One second of 160x90 H.264 from FFmpeg's test source, muxed as ``extra`` says (MP4 by default)."""
    argv = [find_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
            "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, str(path)]
    await trio.run_process(argv, capture_stdout=True, capture_stderr=True)


def playlist(*segments: str) -> bytes:
    body = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for segment in segments:
        body += ["#EXTINF:1.0,", segment]
    return ("\n".join([*body, "#EXT-X-ENDLIST"]) + "\n").encode()


async def test_an_input_at_localhost_is_refused_without_a_connection(tmp_path: Path, start_probe: StartProbe) -> None:
    """``localhost`` resolves to loopback: user_error naming it and the flag, and the probe sees nothing."""
    probe = await start_probe()
    result = await run_job_here(tmp_path, input=f"http://localhost:{probe.port}/x.mp4")
    assert_refused(result, "localhost resolves to", "a loopback address", "--allow-private-inputs")
    assert probe.hits == 0


async def test_an_input_at_the_machines_own_host_name_is_refused(tmp_path: Path, start_probe: StartProbe) -> None:
    """The host name resolves to this machine: refused, whatever port is open there."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"the host name {name!r} does not resolve here")
    if not any(address_kind(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos):
        pytest.skip(f"the host name {name!r} resolves to public addresses only")
    probe = await start_probe()
    result = await run_job_here(tmp_path, input=f"http://{name}:{probe.port}/x.mp4")
    assert_refused(result, f"{name} resolves to", "--allow-private-inputs")
    assert probe.hits == 0


async def test_a_redirect_from_an_allowed_host_to_a_forbidden_one_is_not_followed(
    tmp_path: Path, start_probe: StartProbe
) -> None:
    """The allow-list names one port; its redirect to another port of 127.0.0.1 is refused."""
    allowed, forbidden = await start_probe(), await start_probe()
    allowed.routes["/x.mp4"] = (302, {"Location": forbidden.url("/x.mp4")}, b"")
    result = await run_job_here(tmp_path, inputs=allowed.entry, input=allowed.url("/x.mp4"))
    assert_refused(result, "host 127.0.0.1 is a loopback address", "--allow-private-inputs")
    assert (allowed.hits, forbidden.hits) == (1, 0)


@pytest.mark.parametrize("path", ["/index.m3u8", "/disguised.mp4"])
async def test_a_playlist_segment_at_a_forbidden_address_is_not_fetched(
    tmp_path: Path, start_probe: StartProbe, path: str
) -> None:
    """An HLS playlist from an allowed host, even one served under an MP4 name, cannot lead to another port."""
    allowed, forbidden = await start_probe(), await start_probe()
    allowed.routes[path] = (200, {"Content-Type": "application/vnd.apple.mpegurl"}, playlist(forbidden.url("/0.ts")))
    result = await run_job_here(tmp_path, inputs=allowed.entry, input=allowed.url(path))
    assert_refused(result, "a loopback address")
    assert forbidden.hits == 0


@pytest.mark.parametrize("scheme", ["rtmp", "srt"])
async def test_a_stream_input_at_localhost_is_refused_without_a_connection(
    tmp_path: Path, start_probe: StartProbe, scheme: str
) -> None:
    """rtmp and srt inputs are resolved and checked before FFmpeg starts."""
    probe = await start_probe()
    result = await run_job_here(tmp_path, input=f"{scheme}://localhost:{probe.port}/live/cam")
    assert_refused(result, "localhost resolves to", "--allow-private-inputs")
    assert probe.hits == 0


async def test_an_rtmp_output_to_a_loopback_address_is_refused_without_a_connection(
    tmp_path: Path, start_probe: StartProbe
) -> None:
    """A job's own rtmp_url to 127.0.0.1: user_error naming --allow-private-outputs; the listener counts zero."""
    listener = await start_probe()
    result = await run_job_here(tmp_path, output_mode="rtmp", rtmp_url=listener.url("/live", "rtmp"))
    assert_refused(result, "invalid rtmp_url", "a loopback address", "--allow-private-outputs")
    assert listener.hits == 0


async def test_an_rtmp_output_to_the_metadata_address_is_refused(tmp_path: Path) -> None:
    """169.254.169.254 (cloud metadata) is link-local: refused before any connection is tried."""
    result = await run_job_here(tmp_path, output_mode="rtmp", rtmp_url="rtmp://169.254.169.254/live")
    assert_refused(result, "169.254.169.254 is a link-local address", "--allow-private-outputs")


async def test_an_allowed_http_input_is_downloaded_and_encoded(tmp_path: Path, start_probe: StartProbe) -> None:
    """The allow-list entry admits the server; the MP4 is fetched, encoded, and its copy removed after."""
    clip = tmp_path / "clip.mp4"
    await make_clip(clip)
    server = await start_probe()
    server.routes["/clip.mp4"] = (200, {"Content-Type": "video/mp4"}, clip.read_bytes())
    result = await run_job_here(tmp_path, inputs=server.entry, input=server.url("/clip.mp4"))
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.metrics["input_file_bytes"] == clip.stat().st_size
    info = await probe_media(find_ffmpeg(), result.metrics["output_file"])
    assert (info.width, info.height) == (256, 144)
    assert list((tmp_path / "work" / "fetch").iterdir()) == []


@pytest.mark.parametrize("encrypted", [False, True])
async def test_an_allowed_hls_input_is_downloaded_and_encoded(
    tmp_path: Path, start_probe: StartProbe, encrypted: bool
) -> None:
    """A playlist made by FFmpeg's HLS muxer (AES-128 too): segments and key fetched, encoded to the job's length."""
    hls_dir = tmp_path / "hls"
    hls_dir.mkdir()
    server = await start_probe()
    extra = ["-f", "hls", "-hls_time", "0.5", "-hls_playlist_type", "vod"]
    if encrypted:
        (tmp_path / "enc.key").write_bytes(bytes(range(16)))
        (tmp_path / "keyinfo").write_text(f"{server.url('/keys/enc.key')}\n{tmp_path / 'enc.key'}\n")
        server.routes["/keys/enc.key"] = (200, {}, bytes(range(16)))
        extra += ["-hls_key_info_file", str(tmp_path / "keyinfo")]
    await make_clip(hls_dir / "index.m3u8", *extra)
    for file in hls_dir.iterdir():
        server.routes[f"/media/{file.name}"] = (200, {}, file.read_bytes())
    result = await run_job_here(tmp_path, inputs=server.entry, input=server.url("/media/index.m3u8"))
    assert result.status is JobStatus.COMPLETED, result.logs
    info = await probe_media(find_ffmpeg(), result.metrics["output_file"])
    assert (info.codec, info.height) == ("h264", 144)
    assert info.duration == pytest.approx(1.0, abs=0.25)


@pytest.mark.parametrize(
    ("status", "reason"), [(404, FailureReason.USER_ERROR), (503, FailureReason.NETWORK_ERROR)]
)
async def test_a_client_error_is_the_jobs_fault_and_a_server_error_is_not(
    tmp_path: Path, start_probe: StartProbe, status: int, reason: FailureReason
) -> None:
    """A 4xx from the input URL fails as user_error (final); a 5xx as network_error (retried)."""
    server = await start_probe()
    server.routes["/x.mp4"] = (status, {}, b"no")
    result = await run_job_here(tmp_path, inputs=server.entry, input=server.url("/x.mp4"))
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, reason.value)
    assert f"answered {status}" in result.error


async def test_a_real_agent_refuses_a_localhost_input(
    tmp_path: Path, procs: Processes, start_probe: StartProbe
) -> None:
    """End to end: the job fails as user_error at the master, and the probe counts zero."""
    probe = await start_probe()
    _, master_url = await start_master(procs, tmp_path)
    await start_agent(procs, "agent", master_url, tmp_path / "work", "--poll-interval", "0.2s")
    async with MasterClient(master_url) as client:
        job = await client.submit_job(
            JobRequest(scenario="144p30-h264", parameters={"duration": 1, "input": f"http://localhost:{probe.port}/x"})
        )
        [done] = await wait_for_jobs(client, [job.id], STEP_TIMEOUT_S)
    assert done.status is JobStatus.FAILED and done.failure_reason == FailureReason.USER_ERROR.value
    assert "resolves to 127.0.0.1" in (done.error or "")
    assert probe.hits == 0
