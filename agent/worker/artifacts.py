"""Files through the master, on the worker: uploaded inputs in, encoded outputs back out.

A job whose input is ``artifact:<sha256>`` (a file its submitter uploaded to
the master) has it downloaded with this node's token into
``<work dir>/artifacts/<sha256>``, checked against its name, and kept there for
later jobs on the same file; the directory is bounded like the generated-input
cache (least recently used out first, never a file a job is reading).

A job delivering its output to the master (``deliver=master``, the default for
uploaded inputs) uploads the encoded file after the encode, through the same
resumable protocol: a retry sends only what the master lacks, and a repeat is
a no-op. Failures are retried with backoff within the job, then fail it as
``platform_error`` (retried elsewhere); the file stays on disk throughout.
A package (a directory, see :mod:`agent.package`) goes file by file, each an
artefact of its own (so a file the master holds already costs one ``HEAD``),
and its manifest last; the manifest is the job's output, and the master links
every file it names to the job when the result arrives.

:class:`Delivery` is the seam for other destinations: one method that puts a
file somewhere and says what the result should record.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from agent.client import MasterClient, MasterError, UnknownToMaster, file_sha256
from agent.models import FailureReason
from agent.package import PackageFile
from agent.s3 import client_for
from agent.scenarios import ARTIFACT_PREFIX, JobRejected
from agent.worker.backoff import Backoff
from agent.worker.delivery import (
    DeliveryFailed,
    HttpDelivery,
    S3Delivery,
    package_metrics,
    read_package,
    retrying,
    send_package,
)
from agent.worker.lru import evict_least_recent
from agent.worker.netguard import AllowList, DestinationUnavailable

__all__ = ["ArtifactCache", "DeliveryFailed", "MasterDelivery", "delivery_for"]

log = logging.getLogger(__name__)

# Tries of one delivery before the job fails: with the backoff below, about a minute
# of a master restarting or a link flapping is ridden out.
DELIVERY_ATTEMPTS = 6
DELIVERY_BACKOFF_BASE_S = 2.0
DELIVERY_BACKOFF_CAP_S = 30.0


@attrs.define
class ArtifactCache:
    """Uploaded inputs this worker downloaded, in ``directory`` under their SHA-256, bounded by ``max_bytes``."""

    directory: Path
    max_bytes: int
    _locks: dict[str, trio.Lock] = attrs.field(factory=dict, init=False)
    _readers: dict[str, int] = attrs.field(factory=dict, init=False)

    @contextlib.asynccontextmanager
    async def open_input(self, client: MasterClient, source: str) -> AsyncIterator[Path]:
        """Hold the file of ``artifact:<sha256>`` for the block, downloading it first if it is not cached.

        Raises:
            JobRejected: the master no longer has it (the job was deleted meanwhile): no retry helps.
            DestinationUnavailable: the master could not be reached or sent bad bytes (``platform_error``).
        """
        sha256 = source.removeprefix(ARTIFACT_PREFIX)
        self._readers[sha256] = self._readers.get(sha256, 0) + 1
        try:
            yield await self._get(client, sha256)
        finally:
            self._readers[sha256] -= 1
            if not self._readers[sha256]:
                del self._readers[sha256]

    async def _get(self, client: MasterClient, sha256: str) -> Path:
        path = self.directory / sha256
        async with self._locks.setdefault(sha256, trio.Lock()):
            if path.is_file():
                os.utime(path)
                return path
            self.directory.mkdir(parents=True, exist_ok=True)
            log.info("downloading input artifact %s from the master", sha256)
            try:
                size = await client.download_artifact(sha256, path, as_node=True)
            except UnknownToMaster:
                raise JobRejected("input", f"artifact {sha256} is no longer on the master; upload it again") from None
            except MasterError as exc:  # unreachable, 5xx, bytes that do not match their name
                raise DestinationUnavailable(
                    f"could not download input artifact {sha256}: {exc}", FailureReason.PLATFORM_ERROR
                ) from exc
            log.info("input artifact %s ready (%d bytes)", sha256, size)
        evict_least_recent(self.directory.glob("[0-9a-f]" * 64), self.max_bytes, self._readers, "artifact")
        return path


def _backoff() -> Backoff:
    return Backoff(base=DELIVERY_BACKOFF_BASE_S, cap=DELIVERY_BACKOFF_CAP_S)


class Delivery(Protocol):
    """Puts a job's encoded file, or its package directory, where the job asked; the metrics its result records."""

    async def deliver(self, path: Path) -> dict[str, Any]:
        """Deliver ``path`` (a file, or a directory: a package); raises :class:`DeliveryFailed` once retries
        are spent, :class:`DeliveryRejected` when the destination refuses it for good."""


@attrs.frozen
class MasterDelivery:
    """Uploads outputs to the master's artefact store with the node's token."""

    client: MasterClient
    attempts: int = DELIVERY_ATTEMPTS
    backoff: Backoff = attrs.field(factory=_backoff)

    async def deliver(self, path: Path) -> dict[str, Any]:
        """Upload ``path``; the result records ``output_sha256``, ``output_bytes`` and ``outputs``.

        For a package directory, every file and then its manifest (written
        beside the directory while it is sent); ``outputs`` names the manifest
        with ``"package": kind``, and :func:`agent.worker.delivery.package_metrics` adds the rest.
        """
        if path.is_dir():
            return await self._deliver_package(path)
        sha256 = await trio.to_thread.run_sync(file_sha256, path)
        size = path.stat().st_size
        sent = await self._upload(path, sha256, path.name)
        log.info("Output %s delivered to the master as artifact %s (%d bytes sent)", path.name, sha256, sent)
        return {
            "output_sha256": sha256,
            "output_bytes": size,
            "outputs": [{"name": path.name, "sha256": sha256, "bytes": size}],
        }

    async def _deliver_package(self, directory: Path) -> dict[str, Any]:
        manifest = await read_package(directory)
        sent = 0

        async def upload(file: PackageFile) -> None:
            nonlocal sent
            sent += await self._upload(directory / file.path, file.sha256, f"{directory.name}/{file.path}")

        await send_package(manifest, upload)
        body = manifest.to_bytes()
        sha256 = manifest.sha256()
        written = directory.with_name(f".{directory.name}.manifest.json")
        written.write_bytes(body)
        try:
            sent += await self._upload(written, sha256, f"the manifest of {directory.name}")
        finally:
            written.unlink(missing_ok=True)
        log.info("Package %s (%d files) delivered to the master as artifact %s (%d bytes sent)",
                 directory.name, len(manifest.files), sha256, sent)
        return package_metrics(manifest) | {
            "outputs": [{"name": directory.name, "sha256": sha256, "bytes": len(body), "package": manifest.kind}],
        }

    async def _upload(self, path: Path, sha256: str, what: str) -> int:
        """Make sure the master holds ``path``, retried; returns the bytes sent."""

        async def upload() -> int:
            try:
                return await self.client.upload_artifact(path, sha256, as_node=True)
            except MasterError as exc:  # unreachable, 5xx, 507, a refused token: all worth another try
                raise DestinationUnavailable(str(exc)) from exc

        return await retrying(upload, what=f"{what} to the master", attempts=self.attempts, backoff=self.backoff)


def delivery_for(
    deliver: str, master: MasterClient | None, *, allow: AllowList | None = None, s3_endpoint: str = "",
    attempts: int = DELIVERY_ATTEMPTS, backoff: Backoff | None = None,
) -> Delivery | None:
    """The delivery a job's ``deliver`` parameter names; None keeps the output on this worker only.

    ``allow`` is ``--allow-private-outputs`` (for http(s) URLs), ``s3_endpoint``
    is ``--s3-endpoint`` (for s3:// ones); ``attempts`` and ``backoff`` pace the retries.

    Raises:
        DeliveryFailed: the job asks for the master and this runner has none to deliver to.
    """
    scheme = deliver.partition("://")[0].lower() if "://" in deliver else ""
    if scheme in ("http", "https"):
        return HttpDelivery(deliver, allow or AllowList(), attempts, backoff or _backoff())
    if scheme == "s3":
        return S3Delivery(deliver, client_for(s3_endpoint), attempts, backoff or _backoff())
    if deliver != "master":
        return None
    if master is None:
        raise DeliveryFailed("this worker has no master to deliver outputs to")
    return MasterDelivery(master)
