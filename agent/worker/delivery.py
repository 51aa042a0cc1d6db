"""Outputs delivered outside the farm: an HTTP ``PUT`` to a URL, or an object in an S3 bucket.

``deliver=https://…`` (or ``http://``) PUTs the encoded file to the URL, a
presigned URL or a WebDAV server; a URL ending in ``/`` gets the output's file
name appended. The body is streamed from disk, never held in memory. The
connection goes through the same guarded network backend as job inputs
(:class:`agent.worker.fetch.GuardedBackend`): the host is resolved, every
address checked against ``--allow-private-outputs``, and the checked address
connected to. Redirects are not followed: a PUT's body would have to be sent
again to a place the job did not name.

``deliver=s3://bucket/prefix/`` uploads to ``prefix`` + the output's file name
(see :mod:`agent.s3` for the client, its credentials and endpoint).

A job whose output is a package (a directory: an HLS or DASH ladder, see
:mod:`agent.package`) has every file delivered under the package's root:
``prefix`` + the directory's name + ``/`` + the file's relative path when the
destination ends in ``/``, else the destination itself is the root. Media
files go first, playlists after them and the entry (master playlist, MPD)
last, so a reader never finds a playlist naming a file not there yet.
Within each of those phases :data:`PACKAGE_SENDS_AT_ONCE` files travel at
once (a ladder may have thousands of small segments, each a round trip).
Each file is retried on its own, as one output is.

Whose fault a failure is decides its report. A 4xx answer (bar 408 and 429),
a refused address or a missing bucket is the job's: ``user_error`` at once,
since no retry changes the URL. Connection errors, 5xx answers and timeouts
are retried with backoff within the job, then fail it as ``platform_error``
so that another attempt runs. The encoded file stays on disk throughout.
"""

from __future__ import annotations

import http
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpcore
import httpx
import trio

from agent.client import file_sha256
from agent.models import FailureReason
from agent.package import BadManifest, Manifest, PackageFile
from agent.s3 import S3Client, S3NotInstalled, S3Refused, S3Unavailable, parse_s3_url
from agent.scenarios import JobRejected
from agent.worker.backoff import Backoff
from agent.worker.fetch import TIMEOUTS, GuardedBackend
from agent.worker.netguard import AllowList, DestinationUnavailable

__all__ = [
    "DeliveryFailed", "DeliveryRejected", "HttpDelivery", "S3Delivery", "package_metrics", "read_package", "retrying",
    "send_package",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTPUT_FLAG = "--allow-private-outputs"
# Reads of the output file streamed into the request body.
CHUNK_BYTES = 1024 * 1024
# Files of a package in flight at once: enough to hide each request's round trip, few enough for any server.
PACKAGE_SENDS_AT_ONCE = 4
# Client errors that say "later", not "wrong": the server is busy or was slow to read.
_TRANSIENT_4XX = (408, 429)


class DeliveryFailed(DestinationUnavailable):
    """The output could not be delivered after every retry: ``platform_error``, so another attempt runs."""

    def __init__(self, message: str) -> None:
        super().__init__(message, FailureReason.PLATFORM_ERROR)


class DeliveryRejected(JobRejected):
    """The job's destination refuses the output and a retry would not change that: ``user_error``."""

    def __init__(self, message: str) -> None:
        super().__init__("deliver", message)


def shown_url(url: str) -> str:
    """``url`` without its query and user part: a presigned URL's signature is a credential, kept out of logs."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def destination(url: str, name: str) -> str:
    """The place a file called ``name`` goes: ``url`` itself, or ``url`` + ``name`` when it ends in ``/``."""
    parts = urllib.parse.urlsplit(url)
    if parts.path.endswith("/") or not parts.path:
        path = (parts.path or "/") + urllib.parse.quote(name)
        return urllib.parse.urlunsplit(parts._replace(path=path))
    return url


def package_root(url: str, name: str) -> str:
    """Where a package called ``name`` goes: ``url`` + ``name/`` when ``url`` ends in ``/``, else ``url/``."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    path = path + urllib.parse.quote(name) + "/" if path.endswith("/") else path + "/"
    return urllib.parse.urlunsplit(parts._replace(path=path))


async def read_package(directory: Path) -> Manifest:
    """The manifest of the package in ``directory``, every file hashed (in a thread).

    Raises:
        DeliveryFailed: the directory is empty or holds a link: the packager's fault, not the job's.
    """
    try:
        return await trio.to_thread.run_sync(Manifest.from_directory, directory)
    except BadManifest as exc:
        raise DeliveryFailed(str(exc)) from None


async def send_package(manifest: Manifest, send: Callable[[PackageFile], Awaitable[object]]) -> None:
    """``await send(file)`` for every file, phase by phase (:meth:`Manifest.upload_phases`), a few at once.

    The first failure cancels the sends still in flight.

    Raises:
        JobRejected: a send was refused for good (``user_error``), even if another failed meanwhile.
        DestinationUnavailable: a send failed through its retries.
    """
    limiter = trio.CapacityLimiter(PACKAGE_SENDS_AT_ONCE)

    async def send_one(file: PackageFile) -> None:
        async with limiter:
            await send(file)

    for phase in manifest.upload_phases():
        try:
            async with trio.open_nursery() as nursery:
                for file in phase:
                    nursery.start_soon(send_one, file)
        except BaseExceptionGroup as group:
            expected, other = group.split((JobRejected, DestinationUnavailable))
            if other is not None or expected is None:
                raise  # a bug or a cancel: not ours to reword
            rejected, _ = expected.split(JobRejected)
            raise _first_leaf(rejected or expected) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def package_metrics(manifest: Manifest) -> dict[str, Any]:
    """What the result records of any package: its manifest's SHA-256 is the job's ``output_sha256``."""
    return {
        "output_kind": "package",
        "package_kind": manifest.kind,
        "package_entry": manifest.entry,
        "package_files": len(manifest.files),
        "output_sha256": manifest.sha256(),
        "output_bytes": manifest.total_bytes,
    }


async def retrying(step: Callable[[], Awaitable[T]], *, what: str, attempts: int, backoff: Backoff) -> T:
    """``await step()``, again after a backoff delay while it raises :class:`DestinationUnavailable`.

    Raises:
        DeliveryFailed: the last try failed too (``platform_error``), chained to its cause.
        JobRejected: as raised by ``step``, at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await step()
        except DeliveryFailed:
            raise  # final already: nothing a retry here would change
        except DestinationUnavailable as exc:
            if attempt == attempts:
                raise DeliveryFailed(f"could not deliver {what} after {attempt} tries: {exc}") from exc
            delay = backoff.next()
            log.warning("Delivering %s failed (%s); retrying in %.1fs", what, exc, delay)
            await trio.sleep(delay)
    raise AssertionError("attempts must be 1 or more")


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as body:
        while chunk := await body.read(CHUNK_BYTES):
            yield chunk


def _status_phrase(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


async def _metrics(path: Path, location: str) -> dict[str, Any]:
    """What the result records of an output delivered to ``location`` (with no query: see :func:`shown_url`)."""
    sha256 = await trio.to_thread.run_sync(file_sha256, path)
    # "outputs" stays empty: it lists files on the master, which has none of this job's.
    return {"output_sha256": sha256, "output_bytes": path.stat().st_size, "delivered_to": location, "outputs": []}


@attrs.frozen
class HttpDelivery:
    """PUTs outputs to the job's http(s) URL through the worker's address check."""

    url: str
    allow: AllowList
    attempts: int
    backoff: Backoff

    async def deliver(self, path: Path) -> dict[str, Any]:
        """PUT ``path``, a file or a package directory (each of its files, in order).

        The result records the SHA-256 (of the file, or of the package's
        manifest), the bytes and the URL it went to, without the query.

        Raises:
            DeliveryRejected, AddressRefused: the job's URL is wrong (``user_error``).
            DeliveryFailed: the server stayed unreachable or failing through every retry.
        """
        backend = GuardedBackend(self.allow, field="deliver", flag=OUTPUT_FLAG)
        async with httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=backend, retries=0
        ) as pool:
            if path.is_dir():
                manifest = await read_package(path)
                root = package_root(self.url, path.name)

                async def put(file: PackageFile) -> None:
                    await self._put_retrying(pool, destination(root, file.path), path / file.path)

                await send_package(manifest, put)
                log.info("Package %s (%d files) delivered to %s", path.name, len(manifest.files), shown_url(root))
                return package_metrics(manifest) | {"delivered_to": shown_url(root), "outputs": []}
            url = destination(self.url, path.name)
            await self._put_retrying(pool, url, path)
        log.info("Output %s delivered to %s", path.name, shown_url(url))
        return await _metrics(path, shown_url(url))

    async def _put_retrying(self, pool: httpcore.AsyncConnectionPool, url: str, path: Path) -> None:
        async def put() -> None:
            await self._put(pool, url, path)

        await retrying(put, what=f"{path.name} to {shown_url(url)}", attempts=self.attempts, backoff=self.backoff)

    async def _put(self, pool: httpcore.AsyncConnectionPool, url: str, path: Path) -> None:
        headers = [(b"User-Agent", b"ffrtmp-agent"), (b"Content-Length", str(path.stat().st_size).encode())]
        try:
            response = await pool.request(
                "PUT", url, headers=headers, content=_file_chunks(path), extensions={"timeout": TIMEOUTS}
            )
        except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as exc:
            raise DestinationUnavailable(f"{shown_url(url)}: {exc or type(exc).__name__}") from exc
        except httpcore.UnsupportedProtocol as exc:
            raise DeliveryRejected(f"{shown_url(url)} is not an http(s) URL") from exc
        status = response.status
        if 200 <= status < 300:
            return
        if status >= 500 or status in _TRANSIENT_4XX:
            raise DestinationUnavailable(f"{shown_url(url)} answered {_status_phrase(status)}")
        if status == 409:  # WebDAV: the parent collection is missing
            raise DeliveryRejected(
                f"{shown_url(url)} answered {_status_phrase(status)} to the PUT of the output: the server has no "
                "directory for it; let it create one on PUT (nginx: create_full_put_path on) or create it first"
            )
        raise DeliveryRejected(
            f"{shown_url(url)} answered {_status_phrase(status)} to the PUT of the output; check that the URL "
            "accepts uploads without a login (a presigned URL may have expired)"
        )


@attrs.frozen
class S3Delivery:
    """Uploads outputs to ``s3://bucket/prefix`` + the output's file name."""

    url: str
    s3: S3Client
    attempts: int
    backoff: Backoff

    async def deliver(self, path: Path) -> dict[str, Any]:
        """Upload ``path`` as one object, or a package directory as one object per file, in order.

        The result records the SHA-256 (of the file, or of the package's
        manifest), the bytes and the ``s3://`` location (the package's root).

        Raises:
            DeliveryRejected: the bucket does not exist or refuses this worker's credentials (``user_error``).
            DeliveryFailed: the store stayed unreachable or failing through every retry.
        """
        if path.is_dir():
            manifest = await read_package(path)
            root = package_root(self.url, path.name)

            async def upload(file: PackageFile) -> str:
                return await self._upload(path / file.path, destination(root, file.path))

            await send_package(manifest, upload)
            bucket, key = parse_s3_url(root)
            log.info("Package %s (%d files) delivered to s3://%s/%s", path.name, len(manifest.files), bucket, key)
            return package_metrics(manifest) | {"delivered_to": f"s3://{bucket}/{key}", "outputs": []}
        location = await self._upload(path, destination(self.url, path.name))
        log.info("Output %s delivered to %s", path.name, location)
        return await _metrics(path, location)

    async def _upload(self, path: Path, url: str) -> str:
        """Upload one file to ``url`` (``s3://bucket/key``), retried; returns the location."""
        bucket, key = parse_s3_url(url)
        location = f"s3://{bucket}/{key}"

        async def upload() -> None:
            try:
                await self.s3.upload_file(path, bucket, key)
            except S3Refused as exc:
                raise DeliveryRejected(f"{exc}; check the bucket and this worker's credentials") from exc
            except S3NotInstalled as exc:
                raise DeliveryFailed(str(exc)) from exc  # no retry installs it; another worker may have it
            except S3Unavailable as exc:
                raise DestinationUnavailable(str(exc)) from exc

        await retrying(upload, what=f"{path.name} to {location}", attempts=self.attempts, backoff=self.backoff)
        return location
