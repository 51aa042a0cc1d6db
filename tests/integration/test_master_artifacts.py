"""The master's artefact routes and store on a real socket, driven by httpx and the client.

See "Extensions to the protocol" in docs/architecture.rst. Network rules: the
master binds 127.0.0.1 port 0 and is cancelled at the end of each test.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agent.client import MasterClient, StorageFull
from agent.config import MasterConfig
from agent.master.artifacts import DirectoryArtifacts
from agent.master.server import serve_master

pytestmark = pytest.mark.timeout(20)

KEY = "operator-key"


async def start_master(nursery: trio.Nursery, tmp_path: Path, **fields: Any) -> str:
    config = MasterConfig(host="127.0.0.1", port=0, db="", api_key=KEY, artifacts_dir=str(tmp_path / "store"),
                          **fields)
    url: str = await nursery.start(serve_master, config)
    return url


def blob(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / "input.bin"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


async def test_an_upload_in_two_parts_completes_and_reads_back(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Half a file, then the rest from the offset HEAD gives, stores it whole; GET returns the same bytes."""
    url = await start_master(nursery, tmp_path)
    path, sha = blob(tmp_path, 300_000)
    data = path.read_bytes()
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as http:
        first = await http.patch(f"/artifacts/{sha}", content=data[:100_000],
                                 headers={"Upload-Offset": "0", "Upload-Length": str(len(data))})
        assert first.status_code == 204 and first.headers["upload-offset"] == "100000"
        head = await http.head(f"/artifacts/{sha}")
        assert head.status_code == 404 and head.headers["upload-offset"] == "100000"
        wrong = await http.patch(f"/artifacts/{sha}", content=data[50_000:],
                                 headers={"Upload-Offset": "50000", "Upload-Length": str(len(data))})
        assert wrong.status_code == 409 and wrong.headers["upload-offset"] == "100000"
        rest = await http.patch(f"/artifacts/{sha}", content=data[100_000:],
                                headers={"Upload-Offset": "100000", "Upload-Length": str(len(data))})
        assert rest.status_code == 201, rest.text
        assert (await http.head(f"/artifacts/{sha}")).headers["content-length"] == str(len(data))
        assert (await http.get(f"/artifacts/{sha}")).content == data
        metrics = (await http.get("/metrics")).text
    assert "ffrtmp_master_artifact_bytes_received_total 300000.0" in metrics


async def test_bytes_that_do_not_hash_to_the_name_are_discarded(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A complete upload whose SHA-256 differs from its name is answered 422 and nothing is kept."""
    url = await start_master(nursery, tmp_path)
    name = "0" * 64
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        answer = await http.patch(f"/artifacts/{name}", content=b"hello",
                                  headers={"Upload-Offset": "0", "Upload-Length": "5"})
        assert answer.status_code == 422
        head = await http.head(f"/artifacts/{name}")
    assert head.status_code == 404 and head.headers["upload-offset"] == "0"


async def test_artifact_routes_need_the_key_or_a_node_token(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Without credentials 401; a node may upload, but read only what a job leased to it names."""
    url = await start_master(nursery, tmp_path)
    path, sha = blob(tmp_path, 1000)
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.head(f"/artifacts/{sha}")).status_code == 401
        registered = await http.post("/nodes/register", json={"address": "n1:1"},
                                     headers={"Authorization": f"Bearer {KEY}"})
        token = registered.json()["node_token"]
    async with MasterClient(url, KEY, node_token=token) as client:
        assert await client.upload_artifact(path, sha, as_node=True) == 1000
        with pytest.raises(Exception, match="leased to it"):
            await client.download_artifact(sha, tmp_path / "out.bin", as_node=True)
        assert await client.download_artifact(sha, tmp_path / "out.bin") == 1000
    assert (tmp_path / "out.bin").read_bytes() == path.read_bytes()


async def test_the_client_sends_nothing_for_a_file_the_master_holds(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A second upload of the same file sends no byte; the first one sent them all."""
    url = await start_master(nursery, tmp_path)
    path, sha = blob(tmp_path, 70_000)
    async with MasterClient(url, KEY) as client:
        assert await client.upload_artifact(path, sha) == 70_000
        assert await client.upload_artifact(path, sha) == 0


async def test_an_upload_past_the_quota_is_refused_with_507(nursery: trio.Nursery, tmp_path: Path) -> None:
    """With --artifacts-max-gb smaller than the file, the client raises StorageFull naming the flag."""
    url = await start_master(nursery, tmp_path, artifacts_max_gb=50_000 / 1024**3)
    path, sha = blob(tmp_path, 60_000)
    async with MasterClient(url, KEY) as client:
        with pytest.raises(StorageFull, match="--artifacts-max-gb"):
            await client.upload_artifact(path, sha)


async def test_a_job_naming_a_missing_artifact_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    """POST /jobs with input artifact:<sha> the master does not hold answers 400 saying to upload it."""
    url = await start_master(nursery, tmp_path)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        answer = await http.post("/jobs", json={"scenario": "720p30-h264", "parameters": {"input": "artifact:" + "a" * 64}})
    assert answer.status_code == 400 and "upload the file first" in answer.text


async def test_deleting_a_job_deletes_the_artifacts_only_it_names(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Two jobs share an input: deleting the first keeps it, deleting the second removes it."""
    url = await start_master(nursery, tmp_path)
    path, sha = blob(tmp_path, 5000)
    async with MasterClient(url, KEY) as client:
        await client.upload_artifact(path, sha)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            ids = [
                (await http.post("/jobs", json={"scenario": "720p30-h264", "parameters": {"input": f"artifact:{sha}"}}))
                .json()["id"] for _ in range(2)
            ]
        assert await client.delete_job(ids[0]) == []
        assert await client.artifact_offset(sha) == (True, 5000)
        assert await client.delete_job(ids[1]) == [sha]
        assert await client.artifact_offset(sha) == (False, 0)
    assert not (tmp_path / "store" / "complete" / sha).exists()


async def test_stale_lists_old_artifacts_and_delete_frees_them(tmp_path: Path) -> None:
    """The directory store reports files older than the grace and deletes complete and partial files."""
    store = DirectoryArtifacts(tmp_path)
    data = b"x" * 10
    sha = hashlib.sha256(data).hexdigest()

    async def chunks() -> Any:
        yield data

    await store.append(sha, 0, 10, chunks(), lambda n: None)
    assert await store.stale(3600) == []
    assert await store.stale(-1) == [sha]
    assert await store.delete([sha]) == 10
    assert await store.size(sha) is None
