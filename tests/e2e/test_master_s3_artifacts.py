"""The master's artefact store in an S3 bucket (``--artifacts s3://…``): real master processes, moto's S3 server.

Network rules: masters on 127.0.0.1 with ports from the OS, PostgreSQL on a
Unix socket (``tests/postgres.py``), moto's standalone S3 server in a thread
of the test on 127.0.0.1, port 0 (``tests/s3.py``); every process is stopped
by the fixture that started it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.client import MasterClient, StorageFull
from tests.postgres import fresh_database, postgres_dsn  # noqa: F401  (the fixture)
from tests.s3 import S3Server, s3_server  # noqa: F401  (the fixture)
from tests.support import Processes, start_master, start_process

pytestmark = pytest.mark.slow

KEY = "s3-store-key"


def media(tmp_path: Path, size: int) -> tuple[Path, str]:
    path = tmp_path / "upload.bin"
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_file_uploaded_through_one_master_is_downloaded_through_the_other(
    procs: Processes, tmp_path: Path, postgres_dsn: str, s3_server: S3Server  # noqa: F811
) -> None:
    """Two masters on one PostgreSQL and one bucket: upload via the first, the object is in the bucket under the
    prefix, the second serves the same bytes and takes a repeated upload without a byte."""
    dsn = fresh_database(postgres_dsn)
    store = ["--artifacts", "s3://media-out/farm/", "--s3-endpoint", s3_server.endpoint, "--api-key", KEY]
    masters = [await start_master(procs, tmp_path / name, "--db-dsn", dsn, *store) for name in ("m1", "m2")]
    path, sha256 = media(tmp_path, 3 * 1024 * 1024 + 17)
    async with MasterClient(masters[0][1], KEY) as first, MasterClient(masters[1][1], KEY) as second:
        assert await first.upload_artifact(path, sha256) == path.stat().st_size
        assert s3_server.get("media-out", f"farm/{sha256}") == path.read_bytes()
        target = tmp_path / "downloaded.bin"
        await second.download_artifact(sha256, target)
        assert target.read_bytes() == path.read_bytes()
        assert await second.upload_artifact(path, sha256) == 0, "already in the bucket: nothing sent"


async def test_an_upload_past_the_quota_of_an_s3_store_is_refused_with_507(
    procs: Processes, tmp_path: Path, s3_server: S3Server  # noqa: F811
) -> None:
    """--artifacts-max-gb bounds the bucket's artefacts too: an upload past it is StorageFull naming the flag."""
    _, url = await start_master(
        procs, tmp_path, "--artifacts", "s3://media-out/small", "--s3-endpoint", s3_server.endpoint,
        "--artifacts-max-gb", f"{50_000 / 1024**3:.10f}", "--api-key", KEY,
    )
    # Smaller than the sockets' buffers: the master answers 507 before reading the body.
    path, sha256 = media(tmp_path, 60_000)
    async with MasterClient(url, KEY) as client:
        with pytest.raises(StorageFull, match="--artifacts-max-gb"):
            await client.upload_artifact(path, sha256)


async def test_a_master_whose_bucket_is_missing_says_so_in_one_line_and_exits_2(
    procs: Processes, tmp_path: Path, s3_server: S3Server  # noqa: F811
) -> None:
    """--artifacts naming a bucket the endpoint does not have stops the master at start: exit 2, no traceback."""
    master = await start_process(
        procs, "master",
        ["master", "--host", "127.0.0.1", "--port", "0", "--db", str(tmp_path / "master.db"),
         "--artifacts", "s3://no-such-bucket/x", "--s3-endpoint", s3_server.endpoint],
    )
    assert await master.wait() == 2, master.log
    assert "--artifacts s3://no-such-bucket/x/ cannot be used" in master.log
    assert "Traceback" not in master.log
