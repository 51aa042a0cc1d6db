"""The master's artefact store: files uploaded for jobs, and their outputs, addressed by SHA-256.

An artefact is named by the SHA-256 of its bytes, so the same file is stored
once, and a name can never be given other content. Uploads arrive in pieces
(``PATCH /artifacts/{sha256}`` from an offset, see ``docs/architecture.rst``)
and may stop anywhere: the bytes so far are kept as a partial file, and the
next upload appends from where it ended. When the last byte is in, the whole
file is hashed; it moves into place under its name (an atomic rename) only if
the hash is its name, and is discarded otherwise.

:class:`ArtifactStore` is the seam a routes module sees; :class:`DirectoryArtifacts`
keeps them in one directory (``complete/<sha256>`` and ``partial/<sha256>``).
Another backend (an S3 bucket shared by several masters) implements the same
methods. Which job refers to which artefact is the job store's business
(``job_artifacts``); this module only keeps bytes, and reads a package's
manifest (:func:`package_files`) so that the files it names can be linked to
the job whose output it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from ..package import MAX_MANIFEST_BYTES, BadManifest, Manifest

if TYPE_CHECKING:
    from ..config import MasterConfig

__all__ = [
    "ArtifactStore",
    "Busy",
    "DigestMismatch",
    "DirectoryArtifacts",
    "InvalidUpload",
    "OffsetMismatch",
    "StoreFull",
    "is_sha256",
    "open_artifacts",
    "package_files",
]

# Pieces read from disk per send of a download: large enough for few system calls, small in memory.
CHUNK_BYTES = 256 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(text: str) -> bool:
    """Whether ``text`` is a SHA-256 in lower-case hex, the only form artefact names take."""
    return bool(_SHA256.match(text))


class OffsetMismatch(Exception):
    """An upload did not start where the held bytes end; answered 409 with the held offset."""

    def __init__(self, sha256: str, expected: int, given: int) -> None:
        super().__init__(
            f"artifact {sha256} holds {expected} bytes, so an upload must continue at Upload-Offset {expected}, "
            f"not {given}; ask HEAD for the offset and send the rest from there"
        )
        self.offset = expected


class Busy(Exception):
    """Another upload of the same artefact is arriving now; answered 409."""


class InvalidUpload(ValueError):
    """The upload's headers or length do not add up (an offset past the total, more bytes than announced): 400."""


class DigestMismatch(Exception):
    """The complete upload's SHA-256 is not its name; the bytes were discarded: 422."""


class StoreFull(Exception):
    """The upload would pass the store's quota (``--artifacts-max-gb``) or the disk's free space: 507."""


@attrs.frozen
class Appended:
    """What an upload did: the bytes held afterwards, and whether that completed the artefact."""

    offset: int
    complete: bool


class ArtifactStore(Protocol):
    """Where the master keeps artefacts; each method names one by its SHA-256 (checked by the caller)."""

    async def size(self, sha256: str) -> int | None:
        """The size of the complete artefact, or None when there is none."""

    async def offset(self, sha256: str) -> int:
        """Bytes of a partial upload held, 0 when none."""

    async def append(
        self, sha256: str, offset: int, total: int, chunks: AsyncIterable[bytes], received: Callable[[int], None]
    ) -> Appended:
        """Write ``chunks`` at ``offset`` of an upload of ``total`` bytes; complete it when they reach ``total``.

        ``received`` is called with the size of each chunk written (for metrics).
        A client that stops sending leaves the bytes written so far for the next upload.

        Raises:
            OffsetMismatch, Busy, InvalidUpload, DigestMismatch, StoreFull: see each.
        """

    def read(self, sha256: str) -> AsyncIterator[bytes]:
        """The complete artefact's bytes in chunks; FileNotFoundError when it is not there."""

    async def delete(self, sha256s: Iterable[str]) -> int:
        """Remove these artefacts and any partial uploads of them; returns the bytes freed."""

    async def stale(self, older_than: float) -> list[str]:
        """Artefacts (complete or partial) unchanged for ``older_than`` seconds, for the housekeeping."""


@attrs.define
class DirectoryArtifacts:
    """Artefacts in ``directory``: ``complete/<sha256>`` and ``partial/<sha256>``.

    Args:
        directory: created if missing.
        max_bytes: the quota over complete and partial files; 0 for none (the disk's free space still bounds it).
    """

    directory: Path
    max_bytes: int = 0
    _uploading: set[str] = attrs.field(factory=set, init=False)

    def _complete(self, sha256: str) -> Path:
        return self.directory / "complete" / sha256

    def _partial(self, sha256: str) -> Path:
        return self.directory / "partial" / sha256

    async def size(self, sha256: str) -> int | None:
        try:
            return (await trio.Path(self._complete(sha256)).stat()).st_size
        except FileNotFoundError:
            return None

    async def offset(self, sha256: str) -> int:
        try:
            return (await trio.Path(self._partial(sha256)).stat()).st_size
        except FileNotFoundError:
            return 0

    def _files(self) -> Iterator[Path]:
        """Every complete and partial artefact; none before the first upload made the directories."""
        for sub in ("complete", "partial"):
            with contextlib.suppress(FileNotFoundError):
                yield from (self.directory / sub).iterdir()

    def used_bytes(self) -> int:
        """Bytes of every complete and partial artefact."""
        used = 0
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                used += path.stat().st_size
        return used

    def _check_room(self, needed: int) -> None:
        if self.max_bytes:
            used = self.used_bytes()
            if used + needed > self.max_bytes:
                raise StoreFull(
                    f"the master's artifact store is full: it holds {_gb(used)} of its {_gb(self.max_bytes)} "
                    f"quota and this upload needs {_gb(needed)} more; delete finished jobs "
                    "(ffrtmp jobs delete ID) or start the master with a larger --artifacts-max-gb"
                )
        free = shutil.disk_usage(self.directory).free
        if needed > free:
            raise StoreFull(
                f"the master's disk at {self.directory} has {_gb(free)} free and this upload needs {_gb(needed)}; "
                "free some space, or give the master another --artifacts-dir"
            )

    async def append(
        self, sha256: str, offset: int, total: int, chunks: AsyncIterable[bytes], received: Callable[[int], None]
    ) -> Appended:
        if offset < 0 or total < 0 or offset > total:
            raise InvalidUpload(f"Upload-Offset {offset} and Upload-Length {total} must be 0 <= offset <= length")
        if sha256 in self._uploading:
            raise Busy(f"another upload of artifact {sha256} is arriving; ask HEAD for its offset later")
        self._uploading.add(sha256)
        try:
            held = await self.offset(sha256)
            if offset != held:
                raise OffsetMismatch(sha256, held, offset)
            for sub in ("complete", "partial"):  # made on first use: a master never sent a file keeps no directory
                (self.directory / sub).mkdir(parents=True, exist_ok=True)
            self._check_room(total - offset)
            partial = self._partial(sha256)
            async with await trio.open_file(partial, "ab") as out:
                async for chunk in chunks:
                    if held + len(chunk) > total:
                        raise InvalidUpload(f"the upload sent more than its Upload-Length of {total} bytes")
                    await out.write(chunk)
                    held += len(chunk)
                    received(len(chunk))
            if held < total:
                return Appended(held, complete=False)
            digest = await trio.to_thread.run_sync(_sha256_of, partial)
            if digest != sha256:
                partial.unlink(missing_ok=True)
                raise DigestMismatch(
                    f"the {total} bytes uploaded hash to {digest}, not {sha256}; they were discarded: "
                    "upload the file again"
                )
            os.replace(partial, self._complete(sha256))
            return Appended(total, complete=True)
        finally:
            self._uploading.discard(sha256)

    async def read(self, sha256: str) -> AsyncIterator[bytes]:
        async with await trio.open_file(self._complete(sha256), "rb") as source:
            while chunk := await source.read(CHUNK_BYTES):
                yield chunk

    async def delete(self, sha256s: Iterable[str]) -> int:
        freed = 0
        for sha256 in sha256s:
            if sha256 in self._uploading:
                continue  # being uploaded again: the job that asked for it will refer to it
            for path in (self._complete(sha256), self._partial(sha256)):
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
        return freed

    async def stale(self, older_than: float) -> list[str]:
        cutoff = time.time() - older_than
        found = set()
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                if is_sha256(path.name) and path.stat().st_mtime < cutoff:
                    found.add(path.name)
        return sorted(found - self._uploading)


async def package_files(store: ArtifactStore, sha256: str) -> list[str]:
    """The SHA-256 of every file the package manifest ``sha256`` names.

    Raises:
        BadManifest: the store does not hold the manifest, it is too large, or it is no manifest.
    """
    size = await store.size(sha256)
    if size is None:
        raise BadManifest(f"the package manifest {sha256} is not on this master; deliver the package again")
    if size > MAX_MANIFEST_BYTES:
        raise BadManifest(f"the package manifest {sha256} has {size} bytes, more than the {MAX_MANIFEST_BYTES} allowed")
    body = b"".join([chunk async for chunk in store.read(sha256)])
    return sorted({file.sha256 for file in Manifest.from_bytes(body).files})


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _gb(size: int) -> str:
    return f"{size / 1024**3:.2f} GB"


@contextlib.contextmanager
def open_artifacts(config: MasterConfig) -> Iterator[DirectoryArtifacts]:
    """The master's directory store, as ``config`` says.

    ``--artifacts-dir`` empty puts it beside the SQLite file (``<db>.artifacts``),
    or in ``ffrtmp-artifacts`` under the working directory for PostgreSQL; with
    the queue in memory (``--db ''``) it is a temporary directory removed on
    exit, as the queue itself is forgotten then. ``--artifacts-max-gb`` 0 is no quota.
    """
    max_bytes = int(config.artifacts_max_gb * 1024**3)
    beside_db = f"{config.db}.artifacts" if config.db else ""
    directory = config.artifacts_dir or ("ffrtmp-artifacts" if config.db_dsn else beside_db)
    if directory:
        yield DirectoryArtifacts(Path(directory), max_bytes)
        return
    with tempfile.TemporaryDirectory(prefix="ffrtmp-artifacts-") as temporary:
        yield DirectoryArtifacts(Path(temporary), max_bytes)
