"""The worker's side of files through the master: the input cache and output delivery, with faults injected.

The master is replaced by ``httpx.MockTransport`` only to inject its failures
(5xx, wrong bytes, a missing artefact); the real routes are exercised in
tests/integration/test_master_artifacts.py and tests/e2e/test_master_files.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from agent.client import MasterClient
from agent.models import FailureReason
from agent.scenarios import JobRejected
from agent.worker.artifacts import ArtifactCache, DeliveryFailed, MasterDelivery
from agent.worker.backoff import Backoff
from agent.worker.netguard import DestinationUnavailable


def master(handler: httpx.MockTransport) -> MasterClient:
    return MasterClient("http://master.test", node_token="node-token", transport=handler)


def serving(files: dict[str, bytes], requests: list[str]) -> httpx.MockTransport:
    """A master that serves ``files`` by name and counts the requests it gets."""

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        data = files.get(request.url.path.rsplit("/", 1)[-1])
        if data is None:
            return httpx.Response(404, json={"error": "not here"}, headers={"Upload-Offset": "0"})
        return httpx.Response(200, content=data)

    return httpx.MockTransport(answer)


async def test_an_input_is_downloaded_once_verified_and_then_read_from_the_cache(tmp_path: Path) -> None:
    """The first job downloads the file under its SHA-256; the second finds it without asking the master."""
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    requests: list[str] = []
    cache = ArtifactCache(tmp_path / "artifacts", max_bytes=10**6)
    async with master(serving({sha: data}, requests)) as client:
        for _ in range(2):
            async with cache.open_input(client, f"artifact:{sha}") as path:
                assert path.read_bytes() == data
    assert requests == [f"GET /artifacts/{sha}"]


async def test_bytes_that_do_not_match_their_name_are_not_kept(tmp_path: Path) -> None:
    """A download hashing to something else is a platform error and leaves no file in the cache."""
    sha = "ab" * 32
    cache = ArtifactCache(tmp_path / "artifacts", max_bytes=10**6)
    async with master(serving({sha: b"other bytes"}, [])) as client:
        with pytest.raises(DestinationUnavailable) as failed:
            async with cache.open_input(client, f"artifact:{sha}"):
                pass
    assert failed.value.reason is FailureReason.PLATFORM_ERROR
    assert list((tmp_path / "artifacts").iterdir()) == []


async def test_an_input_gone_from_the_master_is_the_jobs_fault(tmp_path: Path) -> None:
    """404: the file was deleted with its job; no retry can help, so the job is refused as user_error."""
    cache = ArtifactCache(tmp_path / "artifacts", max_bytes=10**6)
    async with master(serving({}, [])) as client:
        with pytest.raises(JobRejected, match="no longer on the master"):
            async with cache.open_input(client, "artifact:" + "cd" * 32):
                pass


async def test_the_cache_evicts_the_least_recently_used_inputs_not_held(tmp_path: Path) -> None:
    """Past the bound, the older input goes; the one a job holds stays."""
    first, second = os.urandom(3000), os.urandom(3000)
    names = [hashlib.sha256(data).hexdigest() for data in (first, second)]
    cache = ArtifactCache(tmp_path / "artifacts", max_bytes=4000)
    async with master(serving(dict(zip(names, (first, second))), [])) as client:
        async with cache.open_input(client, f"artifact:{names[0]}"):
            pass
        os.utime(tmp_path / "artifacts" / names[0], (1, 1))
        async with cache.open_input(client, f"artifact:{names[1]}"):
            pass
    assert sorted(path.name for path in (tmp_path / "artifacts").iterdir()) == [names[1]]


def uploads(failures: int, requests: list[str]) -> httpx.MockTransport:
    """A master that fails the first ``failures`` requests with 503, then takes any upload."""

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request.method)
        if len(requests) <= failures:
            return httpx.Response(503, json={"error": "restarting"})
        if request.method == "HEAD":
            return httpx.Response(404, headers={"Upload-Offset": "0"})
        return httpx.Response(201, json={})

    return httpx.MockTransport(answer)


async def test_a_delivery_rides_out_a_master_failing_for_a_while(tmp_path: Path) -> None:
    """Two 503s, then the upload goes through; the metrics name the output's SHA-256 and size."""
    output = tmp_path / "out.mp4"
    output.write_bytes(b"encoded" * 100)
    requests: list[str] = []
    async with master(uploads(2, requests)) as client:
        metrics = await MasterDelivery(client, backoff=Backoff(base=0.0)).deliver(output)
    sha = hashlib.sha256(output.read_bytes()).hexdigest()
    assert metrics == {
        "output_sha256": sha, "output_bytes": 700, "outputs": [{"name": "out.mp4", "sha256": sha, "bytes": 700}],
    }
    assert requests == ["HEAD", "HEAD", "HEAD", "PATCH"]


async def test_a_delivery_that_keeps_failing_is_a_platform_error_and_keeps_the_file(tmp_path: Path) -> None:
    """After its tries the delivery fails as platform_error (retried elsewhere); the encoded file is still there."""
    output = tmp_path / "out.mp4"
    output.write_bytes(b"encoded")
    async with master(uploads(100, [])) as client:
        with pytest.raises(DeliveryFailed, match="after 3 tries") as failed:
            await MasterDelivery(client, attempts=3, backoff=Backoff(base=0.0)).deliver(output)
    assert failed.value.reason is FailureReason.PLATFORM_ERROR
    assert output.read_bytes() == b"encoded"
