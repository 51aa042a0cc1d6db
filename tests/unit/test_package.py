"""The package manifest: what a directory of outputs is described as, and which manifests are refused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from agent.package import FORMAT, BadManifest, Manifest, PackageFile, delivered_manifest, safe_relative

MASTER = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv0/index.m3u8\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def manifest_bytes(*paths: str) -> bytes:
    files = [{"path": path, "sha256": "0" * 64, "bytes": 1} for path in paths]
    return json.dumps({"format": FORMAT, "kind": "files", "entry": "", "files": files}).encode()


def test_a_ladder_directory_is_hls_with_its_master_playlist_as_entry(tmp_path: Path) -> None:
    """Every file is listed with its SHA-256 and size; the top-level playlist naming variants is the entry."""
    root = write(tmp_path / "pkg", {"master.m3u8": MASTER, "v0/index.m3u8": "#EXTM3U\n", "v0/seg_0.m4s": "media"})
    manifest = Manifest.from_directory(root)
    assert (manifest.kind, manifest.entry) == ("hls", "master.m3u8")
    assert [file.path for file in manifest.files] == ["master.m3u8", "v0/index.m3u8", "v0/seg_0.m4s"]
    assert manifest.files[2] == PackageFile("v0/seg_0.m4s", hashlib.sha256(b"media").hexdigest(), 5)
    assert manifest.total_bytes == sum(len(text) for text in (MASTER, "#EXTM3U\n", "media"))


def test_an_mpd_makes_a_dash_package_and_plain_files_make_a_files_package(tmp_path: Path) -> None:
    """The kind is read from the top level: an .mpd is dash; MP4s alone are files with no entry."""
    dash = Manifest.from_directory(write(tmp_path / "dash", {"stream.mpd": "<MPD/>", "init-0.m4s": "i"}))
    files = Manifest.from_directory(write(tmp_path / "files", {"720p.mp4": "a", "480p.mp4": "b"}))
    assert (dash.kind, dash.entry) == ("dash", "stream.mpd")
    assert (files.kind, files.entry) == ("files", "")


def test_the_same_files_give_the_same_manifest_bytes_and_they_read_back(tmp_path: Path) -> None:
    """The manifest is canonical (its SHA-256 names the package) and from_bytes gives the same manifest."""
    first = Manifest.from_directory(write(tmp_path / "a", {"b.mp4": "2", "a.mp4": "1"}))
    second = Manifest.from_directory(write(tmp_path / "b", {"a.mp4": "1", "b.mp4": "2"}))
    assert first.to_bytes() == second.to_bytes()
    assert first.sha256() == hashlib.sha256(first.to_bytes()).hexdigest()
    assert Manifest.from_bytes(first.to_bytes()) == first


def test_media_go_first_playlists_after_and_the_entry_last() -> None:
    """A reader never finds a playlist naming a file that is not there yet."""
    files = tuple(PackageFile(path, "0" * 64, 1) for path in
                  ["master.m3u8", "v0/index.m3u8", "v0/init.mp4", "v0/seg_0.m4s", "v1/index.m3u8"])
    phases = [[file.path for file in phase] for phase in Manifest("hls", "master.m3u8", files).upload_phases()]
    assert phases == [["v0/init.mp4", "v0/seg_0.m4s"], ["v0/index.m3u8", "v1/index.m3u8"], ["master.m3u8"]]
    assert [len(phase) for phase in Manifest("files", "", files[2:4]).upload_phases()] == [2]


def test_hidden_files_are_left_out_and_a_link_is_refused(tmp_path: Path) -> None:
    """An encoder's temporary file is not delivered; a link, which could carry any file out, refuses the package."""
    root = write(tmp_path / "pkg", {"a.mp4": "1", ".a.mp4.tmp": "x"})
    assert [file.path for file in Manifest.from_directory(root).files] == ["a.mp4"]
    os.symlink("/etc/passwd", root / "passwd")
    with pytest.raises(BadManifest, match="passwd, which is not a regular file"):
        Manifest.from_directory(root)


def test_an_empty_directory_is_no_package(tmp_path: Path) -> None:
    """A package with no files is refused, naming the directory."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadManifest, match="holds no files"):
        Manifest.from_directory(tmp_path / "empty")


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", "a\\..\\x", "", "a/."])
def test_a_path_that_could_leave_the_package_directory_is_refused(path: str) -> None:
    """Absolute paths, '..', '.', empty parts and backslashes are refused before anything is written."""
    with pytest.raises(BadManifest, match="not a plain relative path"):
        Manifest.from_bytes(manifest_bytes("ok.mp4", path))
    with pytest.raises(BadManifest):
        safe_relative(path)


def test_a_path_given_twice_or_another_format_is_refused() -> None:
    """Two entries for one path, or a JSON that is not a package manifest, are refused with a reason."""
    with pytest.raises(BadManifest, match="names a path twice"):
        Manifest.from_bytes(manifest_bytes("a.mp4", "a.mp4"))
    with pytest.raises(BadManifest, match=FORMAT):
        Manifest.from_bytes(b'{"files": []}')
    with pytest.raises(BadManifest, match="not JSON"):
        Manifest.from_bytes(b"\x00")


def test_the_manifest_a_result_delivered_to_the_master_is_its_package_output() -> None:
    """Only a package result's output marked as the package names a manifest; S3 and URL packages name none."""
    on_master = {"output_kind": "package", "outputs": [{"name": "pkg", "sha256": "a" * 64, "package": "hls"}]}
    assert delivered_manifest(on_master) == "a" * 64
    assert delivered_manifest({"output_kind": "package", "outputs": []}) == ""
    assert delivered_manifest({"outputs": [{"name": "x.mp4", "sha256": "b" * 64}]}) == ""
