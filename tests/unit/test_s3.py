"""agent.s3 without a store: S3 locations read as bucket and key, and a process without boto3 says how to get it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.models import FailureReason
from agent.s3 import S3Client, S3NotInstalled, parse_s3_url
from agent.worker.netguard import DestinationUnavailable
from agent.worker.s3input import open_s3_input


def test_an_s3_url_gives_its_bucket_and_its_key_without_a_leading_slash() -> None:
    """s3://bucket/a/b%20c.mp4 is ("bucket", "a/b c.mp4"); a bare bucket has the empty key."""
    assert parse_s3_url("s3://bucket/a/b%20c.mp4") == ("bucket", "a/b c.mp4")
    assert parse_s3_url("s3://bucket") == ("bucket", "")


async def test_without_boto3_an_upload_names_the_s3_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With boto3 not importable, S3NotInstalled names pip install 'ffrtmp-agent[s3]'."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(S3NotInstalled, match=r"boto3 is not installed; pip install 'ffrtmp-agent\[s3\]'"):
        await S3Client("http://127.0.0.1:9").upload_file(tmp_path / "x", "bucket", "key")


async def test_a_worker_without_boto3_fails_an_s3_input_as_platform_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker lacks a capability, not the job a fix: platform_error, so another worker may run it."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(DestinationUnavailable) as failed:
        async with open_s3_input("s3://bucket/clip.mp4", tmp_path, S3Client()):
            pass
    assert failed.value.reason is FailureReason.PLATFORM_ERROR and "[s3]" in str(failed.value)
    assert not list((tmp_path / "fetch").iterdir())
