"""A package delivered to a real master, and ``ffrtmp jobs download`` writing it back as a directory, verified.

Real processes: a master with an API key (its artefacts in a directory, or in
moto's S3 bucket), the test acting as the node that ran the job (it registers,
claims, delivers a 2-rung HLS ladder made by FFmpeg through
:class:`MasterDelivery`, and reports), and the ``ffrtmp`` commands as a user
types them. Network rules: 127.0.0.1, ports chosen by the OS.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agent.client import MasterClient, RequestRejected
from agent.console import download_package
from agent.models import JobRequest, JobResult, JobStatus, NodeRegistration
from agent.package import FORMAT, BadManifest
from agent.worker.artifacts import MasterDelivery
from tests.integration.test_package_delivery import LADDER_FILES, digests, make_ladder
from tests.s3 import S3Server, s3_server  # noqa: F401  (the fixture, asked for by name for the S3 store)
from tests.support import Answer, Processes, run_command, start_master

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

KEY = "package-key"


async def ffrtmp(url: str, *args: str) -> Answer:
    return await run_command(*args, "--master", url, "--api-key", KEY)


@pytest.fixture(params=["directory", "s3"])
async def master(request: pytest.FixtureRequest, procs: Processes, tmp_path: Path) -> AsyncIterator[str]:
    """A master process keeping its artefacts in a directory, or in moto's S3 bucket; its URL."""
    store: list[str] = []
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        store = ["--artifacts", "s3://media-out/farm/", "--s3-endpoint", server.endpoint]
    _, url = await start_master(procs, tmp_path, "--api-key", KEY, *store)
    yield url


async def delivered_job(client: MasterClient, ladder: Path) -> str:
    """A job claimed by a node of this test, its package delivered to the master and its result sent; its id."""
    node = (await client.register(NodeRegistration(address="packager:1"))).node
    job = await client.submit_job(JobRequest.from_json({"scenario": "144p30-h264", "parameters": {}}))
    claimed = await client.claim_next(node.id)
    assert claimed is not None and claimed.id == job.id
    metrics = await MasterDelivery(client).deliver(ladder)
    await client.send_result(JobResult(job_id=job.id, node_id=node.id, status=JobStatus.COMPLETED, metrics=metrics))
    return job.id


async def test_a_delivered_package_downloads_as_the_same_files_and_plays_through_its_master_playlist(
    master: str, tmp_path: Path, ffmpeg: str
) -> None:
    """jobs download writes DIR/<package>/… with every SHA-256 equal, FFmpeg reads it all; jobs delete removes it."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    async with MasterClient(master, KEY) as client:
        job_id = await delivered_job(client, ladder)

    downloaded = await ffrtmp(master, "jobs", "download", job_id, "-o", str(tmp_path / "back"))
    assert downloaded.code == 0, downloaded
    assert downloaded.out.strip() == str(tmp_path / "back" / "job1" / "master.m3u8")
    assert f"job1: {LADDER_FILES} files, {LADDER_FILES} downloaded, 0 already there" in downloaded.err
    assert digests(tmp_path / "back" / "job1") == digests(ladder)
    assert not list((tmp_path / "back").glob(".*")), "no manifest or partial file is left behind"
    decoded = await trio.run_process(
        [ffmpeg, "-v", "error", "-i", downloaded.out.strip(), "-map", "0", "-f", "null", "-"], check=False
    )
    assert decoded.returncode == 0

    deleted = await ffrtmp(master, "jobs", "delete", job_id)
    assert deleted.code == 0, deleted
    assert f"{len(set(digests(ladder).values())) + 1} files no other job uses" in deleted.out


async def test_a_second_download_fetches_only_the_files_missing_or_wrong(
    master: str, tmp_path: Path, ffmpeg: str
) -> None:
    """Run again, jobs download sends nothing; a removed and a damaged file are the only two fetched again."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    async with MasterClient(master, KEY) as client:
        job_id = await delivered_job(client, ladder)
    back = tmp_path / "back"
    assert (await ffrtmp(master, "jobs", "download", job_id, "-o", str(back))).code == 0

    again = await ffrtmp(master, "jobs", "download", job_id, "-o", str(back))
    assert again.code == 0, again
    assert f"{LADDER_FILES} files, 0 downloaded, {LADDER_FILES} already there" in again.err

    (back / "job1" / "v0" / "seg_001.m4s").unlink()
    with (back / "job1" / "v1" / "index.m3u8").open("r+b") as damaged:
        damaged.write(b"X")
    mended = await ffrtmp(master, "jobs", "download", job_id, "-o", str(back))
    assert f"{LADDER_FILES} files, 2 downloaded, {LADDER_FILES - 2} already there" in mended.err
    assert digests(back / "job1") == digests(ladder)


async def test_a_manifest_naming_a_path_outside_the_package_is_refused_by_master_and_download(
    master: str, tmp_path: Path
) -> None:
    """A manifest with ../x: the master refuses a result naming it (400), and download writes nothing from it."""
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"format": FORMAT, "kind": "files", "entry": "",
                                "files": [{"path": "../x", "sha256": "0" * 64, "bytes": 1}]}))
    sha256 = hashlib.sha256(evil.read_bytes()).hexdigest()
    async with MasterClient(master, KEY) as client:
        await client.upload_artifact(evil, sha256)
        node = (await client.register(NodeRegistration(address="packager:1"))).node
        job = await client.submit_job(JobRequest.from_json({"scenario": "144p30-h264", "parameters": {}}))
        assert await client.claim_next(node.id) is not None
        metrics = {"output_kind": "package", "output_sha256": sha256,
                   "outputs": [{"name": "pkg", "sha256": sha256, "bytes": 1, "package": "files"}]}
        with pytest.raises(RequestRejected, match="not a plain relative path"):
            await client.send_result(JobResult(job_id=job.id, node_id=node.id, status=JobStatus.COMPLETED,
                                               metrics=metrics))
        (tmp_path / "back").mkdir()
        with pytest.raises(BadManifest, match="'../x' is not a plain relative path"):
            await download_package(client, sha256, tmp_path / "back" / "pkg")
    assert not list((tmp_path / "back").iterdir())
    assert not (tmp_path / "x").exists()
