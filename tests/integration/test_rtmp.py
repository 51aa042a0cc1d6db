"""RTMP jobs streamed to a real nginx with the rtmp module, which records what it receives.

nginx runs in the foreground as one process (``master_process off``) with
its prefix, pid and recordings in the test's tmp_path, on a free port of
127.0.0.1, and is stopped at teardown. Packages: nginx, libnginx-mod-rtmp.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from agent.config import AgentConfig
from agent.models import Engine, Job, JobResult, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg, probe_media
from agent.worker.engines.gstreamer import find_gstreamer
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.netguard import AllowList
from tests.support import free_port, run_job, stop_process

pytestmark = pytest.mark.slow

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
STEP_TIMEOUT_S = 60
CONFIG = """
load_module {module};
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log stderr info;
events {{}}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            record all;
            record_path {root}/recordings;
        }}
    }}
}}
"""


@attrs.frozen
class RtmpServer:
    url: str
    recordings: Path


async def wait_until_listening(port: int, process: trio.Process) -> None:
    with trio.fail_after(STEP_TIMEOUT_S):
        while True:
            assert process.returncode is None, "nginx exited at start"
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError as exc:
                assert exc.errno in (errno.ECONNREFUSED, None), exc
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


@pytest.fixture
async def rtmp_server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[RtmpServer]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert RTMP_MODULE.exists(), "nginx rtmp module missing: run tests/setup.sh (tests/apt-packages.txt)"
    root = tmp_path / "nginx"
    (root / "recordings").mkdir(parents=True)
    port = free_port()
    (root / "nginx.conf").write_text(CONFIG.format(module=RTMP_MODULE, root=root, port=port))
    process = await trio.lowlevel.open_process(
        [nginx, "-p", str(root), "-e", "stderr", "-c", str(root / "nginx.conf")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until_listening(port, process)
        yield RtmpServer(url=f"rtmp://127.0.0.1:{port}/live", recordings=root / "recordings")
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process)


async def stream(
    tmp_path: Path, server: RtmpServer, key: str, engine: Engine = Engine.AUTO, input_dirs: Sequence[Path] = (),
    **params: Any,
) -> JobResult:
    # The job names the server's own URL, on 127.0.0.1: this worker allows that address and port.
    settings = AgentConfig(
        work_dir=tmp_path / "work", input_dirs=list(input_dirs),
        allow_private_outputs=AllowList.parse([urllib.parse.urlsplit(server.url).netloc]),
    )
    runner = JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"),
                       gstreamer=await find_gstreamer())
    job = Job(id=key, scenario="144p30-h264", engine=engine, parameters={
        "duration": 1, "output_mode": "rtmp", "rtmp_url": server.url, "stream_key": key, **params,
    })
    with trio.fail_after(STEP_TIMEOUT_S):
        return await run_job(runner, job)


async def recording(server: RtmpServer, key: str) -> Path:
    """The server's recording of stream ``key``, once it has closed it."""
    path = server.recordings / f"{key}.flv"
    with trio.fail_after(STEP_TIMEOUT_S):
        while True:
            try:
                if path.stat().st_size > 0:
                    return path
            except FileNotFoundError:
                pass
            await trio.sleep(0.05)


@pytest.mark.parametrize("engine", [Engine.FFMPEG, Engine.GSTREAMER])
async def test_the_stream_arrives_at_the_rtmp_server(
    tmp_path: Path, rtmp_server: RtmpServer, engine: Engine
) -> None:
    """nginx records the job's stream: H.264 at the job's size, about as long as the job."""
    result = await stream(tmp_path, rtmp_server, f"cam-{engine.value}", engine)
    assert result.status is JobStatus.COMPLETED, result.logs
    assert result.metrics["engine"] == engine.value and "fallback_from" not in result.metrics
    assert result.metrics["rtmp_url"] == f"{rtmp_server.url}/cam-{engine.value}"
    info = await probe_media(find_ffmpeg(), await recording(rtmp_server, f"cam-{engine.value}"))
    assert (info.codec, info.width, info.height) == ("h264", 256, 144)
    assert info.duration == pytest.approx(1.0, abs=0.25)


async def test_a_streamed_input_keeps_its_audio(tmp_path: Path, rtmp_server: RtmpServer) -> None:
    """An input with sound is streamed with sound, and the server records both."""
    media = tmp_path / "media"
    media.mkdir()
    argv = [find_ffmpeg(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", str(media / "talk.mp4")]
    await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
    result = await stream(tmp_path, rtmp_server, "talk", input_dirs=[media], input="talk.mp4")
    assert result.status is JobStatus.COMPLETED, result.logs
    info = await probe_media(find_ffmpeg(), await recording(rtmp_server, "talk"))
    assert (info.codec, info.audio_codec) == ("h264", "aac")
