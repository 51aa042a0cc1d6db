"""Outputs delivered with deliver=http(s)://…: PUT to a real nginx with its WebDAV module.

nginx runs in the foreground as one process, as in ``test_rtmp.py``, with
its prefix, temp files, access log and uploads in the test's tmp_path, on a
free port of 127.0.0.1 (allowed with ``--allow-private-outputs 127.0.0.1:PORT``).
``/dav/`` takes PUTs (``dav_methods PUT; create_full_put_path on``),
``/forbidden/`` answers 403 and ``/down/`` 503. Packages: nginx (Debian's
build has the dav module).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from agent.config import AgentConfig
from agent.models import FailureReason, Job, JobResult, JobStatus
from agent.worker.backoff import Backoff
from agent.worker.delivery import DeliveryFailed, HttpDelivery
from agent.worker.engines.ffmpeg import find_ffmpeg, probe_media
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.netguard import AllowList
from tests.integration.test_rtmp import STEP_TIMEOUT_S, wait_until_listening
from tests.support import free_port, run_job, stop_process

pytestmark = pytest.mark.slow

CONFIG = """
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log stderr info;
events {{}}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location /dav/ {{
            dav_methods PUT;
            create_full_put_path on;
        }}
        location /forbidden/ {{
            return 403;
        }}
        location /down/ {{
            return 503;
        }}
    }}
}}
"""


@attrs.frozen
class DavServer:
    url: str
    netloc: str
    www: Path
    access_log: Path

    def hits(self) -> int:
        return len(self.access_log.read_text().splitlines()) if self.access_log.exists() else 0


@pytest.fixture
async def dav_server(tmp_path: Path) -> AsyncIterator[DavServer]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    root = tmp_path / "nginx"
    (root / "www" / "dav").mkdir(parents=True)
    (root / "tmp").mkdir()
    port = free_port()
    (root / "nginx.conf").write_text(CONFIG.format(root=root, port=port))
    process = await trio.lowlevel.open_process(
        [nginx, "-p", str(root), "-e", "stderr", "-c", str(root / "nginx.conf")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until_listening(port, process)
        yield DavServer(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", root / "www", root / "access.log")
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process)


async def encode(tmp_path: Path, allow: list[str], **params: Any) -> tuple[JobResult, Path]:
    """One second of generated video encoded and delivered as ``params`` say; the result and the kept output."""
    settings = AgentConfig(work_dir=tmp_path / "work", allow_private_outputs=AllowList.parse(allow))
    runner = JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"))
    job = Job(id="delivered", scenario="144p30-h264", parameters={"duration": 1, **params})
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner, job)
    [output] = (tmp_path / "work" / "outputs" / job.id).iterdir()
    return result, output


async def test_the_output_arrives_byte_identical_at_a_webdav_server(tmp_path: Path, dav_server: DavServer) -> None:
    """deliver=http://…/dir/ PUTs the output under its file name; the result records its SHA-256, size and URL."""
    result, output = await encode(tmp_path, [dav_server.netloc], deliver=f"{dav_server.url}/dav/farm/?sig=secret")
    assert result.status is JobStatus.COMPLETED, result.error
    arrived = dav_server.www / "dav" / "farm" / output.name
    assert arrived.read_bytes() == output.read_bytes()
    assert result.metrics["output_sha256"] == hashlib.sha256(output.read_bytes()).hexdigest()
    assert result.metrics["output_bytes"] == output.stat().st_size
    assert result.metrics["delivered_to"] == f"{dav_server.url}/dav/farm/{output.name}"  # no signature
    assert (await probe_media(find_ffmpeg(), arrived)).codec == "h264"


async def test_a_refusing_url_fails_the_job_as_user_error_and_keeps_the_file(
    tmp_path: Path, dav_server: DavServer
) -> None:
    """A 403 is the job's fault: user_error at once, naming the answer; the encoded file stays on the worker."""
    result, output = await encode(tmp_path, [dav_server.netloc], deliver=f"{dav_server.url}/forbidden/out.mp4")
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value)
    assert "answered 403 Forbidden" in result.error and "deliver" in result.error
    assert output.stat().st_size > 0
    assert dav_server.hits() == 1


async def test_a_private_address_not_allowed_is_refused_before_any_connection(
    tmp_path: Path, dav_server: DavServer
) -> None:
    """Without --allow-private-outputs the worker never connects: user_error naming the flag, no request logged."""
    result, output = await encode(tmp_path, [], deliver=f"{dav_server.url}/dav/out.mp4")
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value)
    assert "loopback" in result.error and "--allow-private-outputs" in result.error
    assert output.stat().st_size > 0
    assert dav_server.hits() == 0


async def test_a_failing_server_is_retried_then_reported_as_platform_error(
    tmp_path: Path, dav_server: DavServer
) -> None:
    """503s are retried with backoff, then DeliveryFailed (platform_error) says how many tries; the file stays."""
    output = tmp_path / "out.mp4"
    output.write_bytes(b"encoded" * 1000)
    delivery = HttpDelivery(f"{dav_server.url}/down/", AllowList.parse([dav_server.netloc]), 3, Backoff(base=0.0))
    with pytest.raises(DeliveryFailed, match="after 3 tries.*503 Service Unavailable") as failed:
        await delivery.deliver(output)
    assert failed.value.reason is FailureReason.PLATFORM_ERROR
    assert dav_server.hits() == 3 and output.stat().st_size == 7000
