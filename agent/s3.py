"""S3 objects for Trio code: boto3 in worker threads behind a :class:`trio.CapacityLimiter`.

Why boto3: it is AWS's own SDK, released weekly, and it does what we must not
write by hand: SigV4 signing, the standard credential chain (environment,
``~/.aws``, SSO, container and instance roles), managed multipart transfers
with their own part retries (``upload_file``/``download_file``), and any
S3-compatible store through ``endpoint_url``. It is synchronous, so each call
runs in a worker thread; the limiter bounds how many threads S3 may hold at
once, so a burst of jobs cannot starve the rest of the process of threads.

The endpoint is the operator's choice (``--s3-endpoint``, or AWS when empty),
never the job's: a job names only a bucket and a key. Connections to the
endpoint are therefore not checked against the private-address allow-lists,
as those to the master's own host are not.

boto3 is the optional ``[s3]`` extra; without it, using S3 raises
:class:`S3Unavailable` naming the install command.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

__all__ = ["S3Client", "S3NotInstalled", "S3Refused", "S3Unavailable", "client_for", "parse_s3_url"]

T = TypeVar("T")

# Threads S3 transfers may hold at once per process; each managed transfer uses a few more of its own.
S3_THREADS = 8
INSTALL_HINT = "pip install 'ffrtmp-agent[s3]' (or pip install '.[s3]' in a checkout)"
# Error codes that mean the request itself is wrong, not the store being down.
_REFUSED_CODES = frozenset(
    "400 401 403 404 AccessDenied AllAccessDisabled InvalidAccessKeyId InvalidBucketName NoSuchBucket NoSuchKey "
    "SignatureDoesNotMatch".split()
)


class S3Unavailable(Exception):
    """The store could not be used for now: unreachable, failing, or this process lacks boto3 or credentials."""


class S3NotInstalled(S3Unavailable):
    """boto3 is not installed here: this process lacks a capability, which another may have."""


class S3Refused(Exception):
    """The store refused the request: no such bucket or key, or access denied. A retry would not help.

    ``code`` is S3's error code (``NoSuchKey``, ``AccessDenied``, ``404`` for a HEAD).
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; the key has no leading slash and may be empty (a whole bucket)."""
    parts = urllib.parse.urlsplit(url)
    return parts.netloc, urllib.parse.unquote(parts.path.lstrip("/"))


@attrs.define
class S3Client:
    """One boto3 client (made on first use, in a thread), shared by every transfer of this process."""

    endpoint: str = ""
    _limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(S3_THREADS), init=False)
    _client: Any = attrs.field(default=None, init=False)

    def _boto(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise S3NotInstalled(f"this process cannot reach S3: boto3 is not installed; {INSTALL_HINT}") from None
            # Path-style addressing: a self-hosted endpoint has no DNS name per bucket.
            config = Config(s3={"addressing_style": "path"}) if self.endpoint else None
            self._client = boto3.client("s3", endpoint_url=self.endpoint or None, config=config)
        return self._client

    async def _call(self, what: str, action: Callable[[Any], T]) -> T:
        def run() -> T:
            return action(self._boto())

        try:
            return await trio.to_thread.run_sync(run, limiter=self._limiter)
        except S3Unavailable:
            raise
        except Exception as exc:  # botocore's and s3transfer's errors, mapped by whose fault they are
            raise _mapped(what, exc) from exc

    async def upload_file(self, path: Path, bucket: str, key: str) -> None:
        """Upload ``path`` as ``s3://bucket/key`` (multipart when large); replaces an object there.

        Raises:
            S3Refused: no such bucket, or access denied.
            S3Unavailable: the store is unreachable or failing, or boto3 is missing.
        """
        await self._call(f"uploading to s3://{bucket}/{key}", lambda s3: s3.upload_file(str(path), bucket, key))

    async def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Download ``s3://bucket/key`` to ``path``. Raises as :meth:`upload_file`."""
        await self._call(f"downloading s3://{bucket}/{key}", lambda s3: s3.download_file(bucket, key, str(path)))

    async def call(self, what: str, action: Callable[[Any], T]) -> T:
        """Run ``action(boto3_client)`` in a thread; ``what`` names it in errors. Raises as :meth:`upload_file`."""
        return await self._call(what, action)


def _mapped(what: str, exc: BaseException) -> Exception:
    """``exc`` as :class:`S3Refused` or :class:`S3Unavailable`, looking through s3transfer's wrapping."""
    from botocore.exceptions import ClientError, NoCredentialsError

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ClientError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", ""))
        if code in _REFUSED_CODES:
            message = cause.response.get("Error", {}).get("Message", "") or "refused"
            return S3Refused(f"{what}: {code} ({message})", code)
        return S3Unavailable(f"{what}: {code or exc}")
    if isinstance(exc, NoCredentialsError):
        return S3Unavailable(
            f"{what}: this process has no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "a profile, or a role"
        )
    return S3Unavailable(f"{what}: {exc}")


@functools.cache
def client_for(endpoint: str) -> S3Client:
    """The process's client for ``endpoint`` ("" for AWS): one per endpoint, so boto3's pools are shared."""
    return S3Client(endpoint)
