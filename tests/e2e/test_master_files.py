"""Your own files through the farm: uploaded to the master, encoded by an agent, downloaded back, verified.

Real processes: a master with an API key, an agent running the real FFmpeg
with no ``--input-dir`` and a work dir of its own (it can reach the file only
through the master), and the ``ffrtmp`` commands as a user types them. Bytes
the master receives are counted by its ``ffrtmp_master_artifact_bytes_received``
metric. Network rules: 127.0.0.1, ports chosen by the OS.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.config import API_KEY_ENV
from tests.support import REPO, Answer, Processes, run_command, start_agent, start_master, wait_for_jobs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

KEY = "files-key"


async def ffrtmp(url: str, *args: str) -> Answer:
    """``python -m agent ARGS --master URL --api-key KEY``, with stderr a pipe (so no progress is drawn)."""
    return await run_command(*args, "--master", url, "--api-key", KEY)


async def make_clip(ffmpeg: str, path: Path, seconds: float = 2.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    await trio.run_process([
        ffmpeg, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=30:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
    ])
    return path


async def bytes_received(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        text = (await http.get("/metrics")).text
    [line] = [line for line in text.splitlines() if line.startswith("ffrtmp_master_artifact_bytes_received_total")]
    return float(line.split()[-1])


def submitted_id(answer: Answer) -> str:
    assert answer.code == 0, answer
    return str(json.loads(answer.out)["jobs"][0]["id"])


async def test_a_file_goes_through_the_master_to_an_agent_and_its_output_comes_back_verified(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """submit --input on an agent without access to the file; download writes the output_sha256 file; it decodes."""
    clip = await make_clip(ffmpeg, tmp_path / "mine" / "clip.mp4")
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    await start_agent(procs, "agent", url, tmp_path / "agent", "--api-key", KEY)

    submitted = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--param", "preset=ultrafast",
                             "--input", str(clip), "--output", "json")
    job_id = submitted_id(submitted)
    assert f"{clip.stat().st_size} bytes sent" in submitted.err
    async with MasterClient(url, KEY) as client:
        [job] = await wait_for_jobs(client, [job_id], timeout=90)
    assert job.status.value == "completed", (job.error, job.logs)
    assert job.metrics["output_bytes"] > 0

    downloaded = await ffrtmp(url, "jobs", "download", job_id, "-o", str(tmp_path / "back"))
    assert downloaded.code == 0, downloaded
    written = Path(downloaded.out.strip())
    assert written.parent == tmp_path / "back"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == job.metrics["output_sha256"]
    assert written.stat().st_size == job.metrics["output_bytes"]
    decoded = await trio.run_process([ffmpeg, "-v", "error", "-i", str(written), "-f", "null", "-"], check=False)
    assert decoded.returncode == 0


async def test_the_same_file_again_uploads_nothing_and_a_half_upload_resumes(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """Half a file sent earlier: submit sends only the other half; a second submit of it sends no byte."""
    clip = await make_clip(ffmpeg, tmp_path / "mine" / "clip.mp4", seconds=4.0)
    data = clip.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        # An upload that stopped half way, as a killed CLI leaves it.
        answer = await http.patch(f"/artifacts/{sha256}", content=data[:half],
                                  headers={"Upload-Offset": "0", "Upload-Length": str(len(data))})
    assert answer.status_code == 204
    assert await bytes_received(url) == half

    first = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--input", str(clip))
    assert first.code == 0, first
    assert f"{len(data) - half} bytes sent" in first.err
    assert await bytes_received(url) == len(data)

    again = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--input", str(clip))
    assert again.code == 0, again
    assert "already on the master, nothing sent" in again.err
    assert await bytes_received(url) == len(data)


async def test_an_upload_killed_half_way_is_resumed_by_the_next_submit(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """SIGKILL the CLI while it uploads (a slow link): the master keeps what arrived, the next submit sends the rest."""
    big = tmp_path / "mine" / "big.bin"
    big.parent.mkdir(parents=True)
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV}
    # The CLI on a slow link: the real command, with a pause after each piece of the file it sends.
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import runpy, sys, time, agent.client as c\n"
        "async def _slow(path, start, on_progress, _orig=c._file_chunks):\n"
        "    import trio\n"
        "    async for chunk in _orig(path, start, on_progress):\n"
        "        await trio.sleep(0.02)\n"
        "        yield chunk\n"
        "c._file_chunks = _slow\n"
        "sys.argv = ['agent', *sys.argv[1:]]\n"
        "runpy.run_module('agent', run_name='__main__')\n"
    )
    cli = await trio.lowlevel.open_process(
        [sys.executable, str(slow), "jobs", "submit", "--scenario", "144p30-h264", "--input", str(big),
         "--master", url, "--api-key", KEY],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with trio.fail_after(60):
        while await bytes_received(url) < 4 * 1024 * 1024:
            await trio.sleep(0.1)
    cli.kill()
    await cli.wait()
    await trio.sleep(0.5)  # the master notices the dropped connection
    held = await bytes_received(url)
    assert 0 < held < big.stat().st_size

    resumed = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--input", str(big))
    assert resumed.code == 0, resumed  # no agent runs it: the upload is what this test watches
    assert f"{big.stat().st_size - int(held)} bytes sent" in resumed.err
    assert await bytes_received(url) == big.stat().st_size


async def test_an_upload_past_the_quota_is_one_line_and_exit_1(procs: Processes, tmp_path: Path, ffmpeg: str) -> None:
    """A master with --artifacts-max-gb smaller than the file: the CLI says so in one line naming the flag."""
    clip = await make_clip(ffmpeg, tmp_path / "mine" / "clip.mp4")
    _, url = await start_master(procs, tmp_path, "--api-key", KEY, "--artifacts-max-gb", "0.00001")
    refused = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--input", str(clip))
    lines = [line for line in refused.err.splitlines() if line.startswith("error: ")]
    assert refused.code == 1 and len(lines) == 1, refused
    assert "artifact store is full" in lines[0] and "--artifacts-max-gb" in lines[0]


async def test_deleting_jobs_removes_the_files_no_other_job_uses(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """Two jobs on one uploaded file: deleting one keeps the file, deleting both removes it from the store."""
    clip = await make_clip(ffmpeg, tmp_path / "mine" / "clip.mp4")
    sha256 = hashlib.sha256(clip.read_bytes()).hexdigest()
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    submitted = await ffrtmp(url, "jobs", "submit", "--scenario", "144p30-h264", "--input", str(clip),
                             "--count", "2", "--output", "json")
    assert submitted.code == 0, submitted
    ids = [job["id"] for job in json.loads(submitted.out)["jobs"]]
    stored = tmp_path / "master.db.artifacts" / "complete" / sha256
    assert stored.is_file()
    first = await ffrtmp(url, "jobs", "delete", ids[0])
    assert first.code == 0 and "and 0 files no other job uses" in first.out, first
    assert stored.is_file()
    second = await ffrtmp(url, "jobs", "delete", ids[1])
    assert second.code == 0 and "and 1 file no other job uses" in second.out, second
    assert not stored.exists()
