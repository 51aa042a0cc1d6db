"""The master's artefact store in an S3 bucket, shared by every master on one PostgreSQL.

Complete artefacts are objects ``<prefix>/<sha256>``; any master can answer
``HEAD``/``GET`` for one another master received. Uploads in progress are
staged on this master's disk (a :class:`DirectoryArtifacts`, in
``--artifacts-dir``) and the finished, verified file is uploaded to the bucket
in one managed transfer (multipart for large files, by boto3).

Why stage rather than keep the partial upload as S3 multipart parts: the
protocol's pieces (``PATCH`` from any offset, cut wherever a connection
dropped) have arbitrary sizes, while S3 parts must be 5 MiB or more but the
last, so parts would need their own buffering and bookkeeping; and the hash
must be checked before the object appears under its name, which staging
gives for free (S3 offers no SHA-256 of a multipart object's bytes). The cost:
an interrupted upload resumes on the master that holds its staged bytes; a
client that reaches another master starts over there, and still succeeds.

Quota (``--artifacts-max-gb``) counts the bucket's objects under the prefix
plus the staged bytes. Access goes through :mod:`agent.s3` (boto3 in threads).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from functools import partial
from typing import Any

import attrs

from agent.s3 import S3Client, S3Refused, S3Unavailable, parse_s3_url
from agent.settings import ConfigError

from .artifacts import CHUNK_BYTES, Appended, DirectoryArtifacts, StoreFull, is_sha256

__all__ = ["S3Artifacts"]


def _delete(bucket: str, key: str, s3: Any) -> None:
    s3.delete_object(Bucket=bucket, Key=key)


@attrs.define
class S3Artifacts:
    """Artefacts as objects under ``s3://bucket/prefix``, uploads staged in ``staging`` until complete."""

    s3: S3Client
    bucket: str
    prefix: str
    staging: DirectoryArtifacts
    max_bytes: int = 0

    @classmethod
    def over(cls, location: str, endpoint: str, staging: DirectoryArtifacts) -> S3Artifacts:
        """The store at ``location`` (``s3://bucket/prefix``) on ``endpoint`` ("" for AWS), with the quota of
        ``staging``, the directory store that holds uploads in progress."""
        bucket, prefix = parse_s3_url(location)
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        return cls(S3Client(endpoint), bucket, prefix, staging, staging.max_bytes)

    async def check(self) -> None:
        """Make sure the bucket answers, before the master serves.

        Raises:
            ConfigError: boto3 is missing, the endpoint does not answer, or the bucket is not there or not ours.
        """
        try:
            await self.s3.call(f"checking s3://{self.bucket}", lambda s3: s3.head_bucket(Bucket=self.bucket))
        except (S3Refused, S3Unavailable) as exc:
            reason = f"cannot be used: {exc}; check --artifacts, --s3-endpoint and the AWS credentials"
            raise ConfigError(f"--artifacts s3://{self.bucket}/{self.prefix} {reason}", reason) from None

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256}"

    async def _head(self, sha256: str) -> dict[str, Any] | None:
        key = self._key(sha256)
        try:
            answer: dict[str, Any] = await self.s3.call(
                f"checking s3://{self.bucket}/{key}", lambda s3: s3.head_object(Bucket=self.bucket, Key=key)
            )
        except S3Refused as exc:
            if exc.code in ("404", "NoSuchKey"):
                return None
            raise
        return answer

    async def size(self, sha256: str) -> int | None:
        head = await self._head(sha256)
        return None if head is None else int(head["ContentLength"])

    async def offset(self, sha256: str) -> int:
        return await self.staging.offset(sha256)

    async def _objects(self) -> list[dict[str, Any]]:
        """Every object under the prefix, named as an artefact."""

        def listing(s3: Any) -> list[dict[str, Any]]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            found = [item for page in pages for item in page.get("Contents", [])]
            return [item for item in found if is_sha256(item["Key"][len(self.prefix):])]

        return await self.s3.call(f"listing s3://{self.bucket}/{self.prefix}", listing)

    async def append(
        self, sha256: str, offset: int, total: int, chunks: AsyncIterable[bytes], received: Callable[[int], None]
    ) -> Appended:
        if self.max_bytes:
            used = sum(int(item["Size"]) for item in await self._objects()) + self.staging.used_bytes()
            if used + total - offset > self.max_bytes:
                raise StoreFull(
                    f"the master's artifact store is full: it holds {used / 1024**3:.2f} GB of its "
                    f"{self.max_bytes / 1024**3:.2f} GB quota and this upload needs {(total - offset) / 1024**3:.2f} "
                    "GB more; delete finished jobs (ffrtmp jobs delete ID) or start the master with a larger "
                    "--artifacts-max-gb"
                )
        appended = await self.staging.append(sha256, offset, total, chunks, received)
        if appended.complete:
            # Verified by the staging store; the object appears under its name only now.
            staged = self.staging.directory / "complete" / sha256
            await self.s3.upload_file(staged, self.bucket, self._key(sha256))
            staged.unlink(missing_ok=True)
        return appended

    async def read(self, sha256: str) -> AsyncIterator[bytes]:
        key = self._key(sha256)
        try:
            answer = await self.s3.call(
                f"reading s3://{self.bucket}/{key}", lambda s3: s3.get_object(Bucket=self.bucket, Key=key)
            )
        except S3Refused:
            raise FileNotFoundError(f"artifact {sha256} is not in s3://{self.bucket}/{self.prefix}") from None
        body = answer["Body"]
        try:
            while chunk := await self.s3.call(f"reading s3://{self.bucket}/{key}", lambda _: body.read(CHUNK_BYTES)):
                yield chunk
        finally:
            body.close()

    async def delete(self, sha256s: Iterable[str]) -> int:
        names = list(sha256s)
        freed = await self.staging.delete(names)
        for sha256 in names:
            size = await self.size(sha256)
            if size is not None:
                await self.s3.call(f"deleting artifact {sha256}", partial(_delete, self.bucket, self._key(sha256)))
                freed += size
        return freed

    async def stale(self, older_than: float) -> list[str]:
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=older_than)
        found = {item["Key"][len(self.prefix):] for item in await self._objects() if item["LastModified"] < cutoff}
        return sorted(found | set(await self.staging.stale(older_than)))


