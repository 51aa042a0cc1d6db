"""A package: one job's output as a directory of files (an HLS or DASH ladder, or one MP4 per rung).

The worker describes a package in a *manifest*: each file's relative path,
SHA-256 and size, the package's kind and its entry (the master playlist or
the MPD). The manifest is canonical JSON (sorted keys, files sorted by path),
so the same files always give the same bytes, and its SHA-256 names the
whole package: it is the job's ``output_sha256``. On the master the manifest
is an artefact like any other, beside the files' own artefacts.

Anyone reading a manifest (the master linking a job's files, the CLI writing
them into a directory) goes through :meth:`Manifest.from_bytes`, which refuses
a path that could leave the package's directory: absolute, ``..``, ``.``,
empty parts, backslashes, or a path given twice.

Plain code with no trio: the worker runs :meth:`Manifest.from_directory`
(which reads and hashes every file) in a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal, cast, get_args

import attrs

from agent.client import file_sha256

__all__ = [
    "FORMAT",
    "MAX_MANIFEST_BYTES",
    "BadManifest",
    "Manifest",
    "PackageFile",
    "PackageKind",
    "delivered_manifest",
    "safe_relative",
]

# Written into every manifest so that a later layout can be told apart.
FORMAT = "ffrtmp-package/1"
# About 30 000 files: hours of segments over many rungs, and still a bounded read for the master.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Files a player reads first and follows to the others; delivered after the files they name.
PLAYLIST_SUFFIXES = (".m3u8", ".mpd")
# A master playlist names its variant streams with this tag; a rung's media playlist does not.
_HLS_VARIANT_TAG = b"#EXT-X-STREAM-INF"
# Enough of a playlist's start to find its first variant tag.
_PLAYLIST_PEEK_BYTES = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

PackageKind = Literal["hls", "dash", "files"]
KINDS: tuple[PackageKind, ...] = get_args(PackageKind)


class BadManifest(ValueError):
    """A manifest (or a package directory) that cannot be delivered or written out as it stands."""


def safe_relative(text: str) -> PurePosixPath:
    """``text`` as a relative path that stays inside the directory it is joined to.

    Raises:
        BadManifest: absolute, empty, with ``..``, ``.``, empty parts or a backslash; the message names it.
    """
    parts = text.split("/")
    if not text or "\\" in text or "\x00" in text or any(part in ("", ".", "..") for part in parts):
        raise BadManifest(
            f"the package path {text!r} is not a plain relative path (no leading /, '..', '.', empty parts or "
            "backslashes); the package was not written"
        )
    return PurePosixPath(*parts)


@attrs.frozen
class PackageFile:
    """One file of a package: where it sits under the package's root, and what it holds."""

    path: str
    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, data: Any) -> PackageFile:
        """One ``files`` entry, checked. Raises :class:`BadManifest`."""
        if not isinstance(data, dict):
            raise BadManifest(f"a package file entry must be an object, not {type(data).__name__}")
        path, sha256, size = data.get("path"), data.get("sha256"), data.get("bytes")
        if not isinstance(path, str):
            raise BadManifest("a package file entry has no path")
        safe_relative(path)
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise BadManifest(f"the package file {path!r} has no SHA-256 (64 lower-case hex digits)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadManifest(f"the package file {path!r} has no size in bytes")
        return cls(path, sha256, size)


def _rank(file: PackageFile, entry: str) -> int:
    """0 for media, 1 for playlists, 2 for the entry."""
    return 2 if file.path == entry else int(file.path.lower().endswith(PLAYLIST_SUFFIXES))


@attrs.frozen
class Manifest:
    """The files of a package, its kind and its entry (``""`` for a package of plain files).

    Build one with :meth:`from_directory` (the worker) or :meth:`from_bytes` (anyone reading one).
    """

    kind: PackageKind
    entry: str
    files: tuple[PackageFile, ...]

    @classmethod
    def from_directory(cls, directory: Path) -> Manifest:
        """Describe every regular file under ``directory``, hashing each; blocking (run it in a thread).

        Hidden files (a name starting with ``.``, such as an encoder's temporary
        files) are left out. The kind is read from the top level: an ``.mpd`` is
        ``dash``; an ``.m3u8`` naming variant streams (``#EXT-X-STREAM-INF``) is
        ``hls``, with that master playlist as the entry; anything else ``files``.

        Raises:
            BadManifest: the directory is empty, or holds a link or another non-regular file.
        """
        found: list[PackageFile] = []
        for root, dirs, names in os.walk(directory):
            dirs[:] = sorted(name for name in dirs if not name.startswith("."))
            visible = sorted(name for name in names if not name.startswith("."))
            for name in [*dirs, *visible]:
                path = Path(root) / name
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    # A link could carry any file of this worker out with the package.
                    raise BadManifest(
                        f"the package {directory} holds {path.relative_to(directory)}, which is not a regular file"
                    )
            for name in visible:
                path = Path(root) / name
                relative = path.relative_to(directory).as_posix()
                found.append(PackageFile(relative, file_sha256(path), path.stat().st_size))
        if not found:
            raise BadManifest(f"the package {directory} holds no files")
        kind, entry = _kind_of(directory, [file.path for file in found])
        return cls(kind, entry, tuple(sorted(found, key=lambda file: file.path)))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Read a manifest, checking every path before anyone writes a file by it.

        Raises:
            BadManifest: not a manifest, another format, or a path that could leave the package's directory.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise BadManifest(f"a package manifest is at most {MAX_MANIFEST_BYTES} bytes, this one {len(data)}")
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise BadManifest(f"the package manifest is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise BadManifest(f"the package manifest is not in the {FORMAT} format")
        kind, entry, files = body.get("kind"), body.get("entry"), body.get("files")
        if kind not in KINDS or not isinstance(entry, str) or not isinstance(files, list):
            raise BadManifest("the package manifest lacks its kind, entry or files")
        parsed = tuple(PackageFile.from_json(file) for file in files)
        paths = [file.path for file in parsed]
        if len(set(paths)) != len(paths):
            raise BadManifest("the package manifest names a path twice")
        if entry and entry not in paths:
            raise BadManifest(f"the package's entry {entry!r} is not one of its files")
        return cls(cast(PackageKind, kind), entry, parsed)

    def to_bytes(self) -> bytes:
        """The canonical JSON: the same files give the same bytes, and so the same SHA-256."""
        body = {
            "format": FORMAT, "kind": self.kind, "entry": self.entry,
            "files": [file.to_json() for file in sorted(self.files, key=lambda file: file.path)],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def sha256(self) -> str:
        """The package's name: the SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        """The size of every file together (the manifest itself not counted)."""
        return sum(file.bytes for file in self.files)

    def upload_phases(self) -> list[list[PackageFile]]:
        """Media, then playlists, then the entry: each phase sent whole before the next starts, so a reader
        never finds a playlist naming a file not there yet. Empty phases are left out; paths in order within."""
        ranked = [(_rank(file, self.entry), file) for file in sorted(self.files, key=lambda file: file.path)]
        phases = [[file for rank, file in ranked if rank == phase] for phase in range(3)]
        return [phase for phase in phases if phase]


def delivered_manifest(metrics: Mapping[str, Any]) -> str:
    """The SHA-256 of the package manifest a result's metrics say went to the master; ``""`` for none.

    A package delivered to the master is the one ``outputs`` entry marked
    ``"package"``; one delivered to S3 or a URL has no ``outputs``.
    """
    outputs = metrics.get("outputs") if metrics.get("output_kind") == "package" else None
    for output in outputs if isinstance(outputs, list) else []:
        if isinstance(output, dict) and output.get("package") and isinstance(output.get("sha256"), str):
            return str(output["sha256"])
    return ""


def _kind_of(directory: Path, paths: list[str]) -> tuple[PackageKind, str]:
    top = [path for path in paths if "/" not in path]
    for path in top:
        if path.lower().endswith(".mpd"):
            return "dash", path
    for path in top:
        if path.lower().endswith(".m3u8"):
            with (directory / path).open("rb") as playlist:
                if _HLS_VARIANT_TAG in playlist.read(_PLAYLIST_PEEK_BYTES):
                    return "hls", path
    return "files", ""
