"""``s3://bucket/key`` job inputs, downloaded by the worker before FFmpeg reads them.

FFmpeg cannot read S3, and should not sign requests: the object is downloaded
with the worker's credentials (the standard AWS chain) from the operator's
endpoint (``--s3-endpoint``, see :mod:`agent.s3`) into a directory of the job,
removed when the job is done with it.

A missing bucket or key, or access denied, is the job's fault (``user_error``);
an unreachable or failing store is ``network_error`` (retried by the master);
a worker without boto3 is ``platform_error``, so the job may run on another.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from agent.models import FailureReason
from agent.s3 import S3Client, S3NotInstalled, S3Refused, S3Unavailable, parse_s3_url
from agent.scenarios import JobRejected
from agent.worker.netguard import DestinationUnavailable

__all__ = ["open_s3_input"]


@contextlib.asynccontextmanager
async def open_s3_input(url: str, work_dir: Path, s3: S3Client) -> AsyncIterator[Path]:
    """Download the object at ``url`` under ``work_dir``; yields its local path, removed when the block exits.

    Raises:
        JobRejected: no such bucket or key, or access denied.
        DestinationUnavailable: the store could not be used (see the module docstring for the reasons).
    """
    bucket, key = parse_s3_url(url)
    directory = work_dir / "fetch" / secrets.token_hex(8)
    directory.mkdir(parents=True)
    path = directory / "input"
    try:
        try:
            await s3.download_file(bucket, key, path)
        except S3Refused as exc:
            raise JobRejected("input", f"{exc}; check the bucket, the key and this worker's credentials") from None
        except S3NotInstalled as exc:
            raise DestinationUnavailable(str(exc), FailureReason.PLATFORM_ERROR) from None
        except S3Unavailable as exc:
            raise DestinationUnavailable(str(exc)) from None
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)
