"""A package (a 2-rung HLS ladder made by FFmpeg) delivered to S3 and by HTTP PUT, file by file, in order.

The package is made directly with FFmpeg here (fMP4 segments, a master
playlist), so these tests stand apart from how ladder jobs build theirs. S3 is
moto's server (``tests/s3.py``); HTTP is nginx's WebDAV module
(``test_deliver_http.py``'s fixture), whose access log shows the order of the
PUTs. Network rules: 127.0.0.1, ports chosen by the OS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from agent.models import FailureReason
from agent.package import Manifest
from agent.s3 import client_for
from agent.worker.backoff import Backoff
from agent.worker.delivery import PACKAGE_SENDS_AT_ONCE, DeliveryFailed, DeliveryRejected, HttpDelivery, S3Delivery
from agent.worker.netguard import AllowList
from tests.integration.test_deliver_http import DavServer, dav_server  # noqa: F401  (the fixture)
from tests.s3 import S3Server, s3_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(60)

# The rungs' playlists and segments sit in v0/ and v1/, the master playlist at the top.
LADDER_FILES = 9


async def make_ladder(ffmpeg: str, root: Path) -> Path:
    """Two seconds as a 2-rung HLS package in ``root``: master.m3u8, v{0,1}/index.m3u8, init and 2 segments each."""
    root.mkdir(parents=True)
    await trio.run_process([
        ffmpeg, "-hide_banner", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
        "-t", "2", "-map", "0:v", "-map", "0:v", "-filter:v:1", "scale=96:54", "-c:v", "libx264",
        "-preset", "ultrafast", "-g", "15", "-b:v", "200k", "-f", "hls", "-hls_time", "1",
        "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4", "-master_pl_name", "master.m3u8",
        "-var_stream_map", "v:0 v:1", "-hls_segment_filename", "v%v/seg_%03d.m4s", "v%v/index.m3u8",
    ], cwd=root)
    assert len([path for path in root.rglob("*") if path.is_file()]) == LADDER_FILES
    return root


def digests(root: Path) -> dict[str, str]:
    """Relative path to SHA-256 of every file under ``root``."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def put_paths(server: DavServer) -> list[str]:
    """The paths requested of the server, in the order its access log has them."""
    return [line.split('"')[1].split()[1] for line in server.access_log.read_text().splitlines()]


def quick() -> Backoff:
    return Backoff(base=0.01, cap=0.01)


async def test_every_file_of_a_package_arrives_under_the_s3_prefix_and_its_name(
    tmp_path: Path, ffmpeg: str, s3_server: S3Server  # noqa: F811
) -> None:
    """deliver=s3://media-out/renders/ puts each file at renders/<package>/<path>; the result names the manifest."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    delivery = S3Delivery("s3://media-out/renders/", client_for(s3_server.endpoint), 2, quick())
    metrics = await delivery.deliver(ladder)
    for relative, sha256 in digests(ladder).items():
        assert hashlib.sha256(s3_server.get("media-out", f"renders/job1/{relative}")).hexdigest() == sha256
    manifest = Manifest.from_directory(ladder)
    assert metrics == {
        "output_kind": "package", "package_kind": "hls", "package_entry": "master.m3u8",
        "package_files": LADDER_FILES, "output_sha256": manifest.sha256(), "output_bytes": manifest.total_bytes,
        "delivered_to": "s3://media-out/renders/job1/", "outputs": [],
    }


async def test_an_s3_destination_without_a_trailing_slash_is_the_package_root(
    tmp_path: Path, ffmpeg: str, s3_server: S3Server  # noqa: F811
) -> None:
    """deliver=s3://media-out/show1 puts the master playlist at show1/master.m3u8, as a file's exact key would."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    metrics = await S3Delivery("s3://media-out/show1", client_for(s3_server.endpoint), 2, quick()).deliver(ladder)
    assert metrics["delivered_to"] == "s3://media-out/show1/"
    assert s3_server.get("media-out", "show1/master.m3u8") == (ladder / "master.m3u8").read_bytes()


async def test_every_file_is_put_to_the_webdav_server_segments_first_and_the_master_playlist_last(
    tmp_path: Path, ffmpeg: str, dav_server: DavServer  # noqa: F811
) -> None:
    """deliver=http://…/dav/farm/ PUTs each file under farm/<package>/; the log shows media, playlists, master."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    delivery = HttpDelivery(f"{dav_server.url}/dav/farm/", AllowList.parse([dav_server.netloc]), 2, quick())
    metrics = await delivery.deliver(ladder)
    assert digests(dav_server.www / "dav" / "farm" / "job1") == digests(ladder)
    assert metrics["delivered_to"] == f"{dav_server.url}/dav/farm/job1/"
    assert metrics["output_sha256"] == Manifest.from_directory(ladder).sha256()
    put = put_paths(dav_server)
    assert len(put) == LADDER_FILES
    playlists = [index for index, path in enumerate(put) if path.endswith(".m3u8")]
    assert playlists == [6, 7, 8] and put[-1] == "/dav/farm/job1/master.m3u8"


async def test_a_package_the_server_refuses_is_the_jobs_fault_at_once(
    tmp_path: Path, ffmpeg: str, dav_server: DavServer  # noqa: F811
) -> None:
    """A 403 is user_error naming the URL, not retried; no playlist is sent after it, and the package stays."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    delivery = HttpDelivery(f"{dav_server.url}/forbidden/", AllowList.parse([dav_server.netloc]), 3, quick())
    with pytest.raises(DeliveryRejected, match="403 Forbidden"):  # a JobRejected: user_error
        await delivery.deliver(ladder)
    put = put_paths(dav_server)
    assert 1 <= len(put) <= PACKAGE_SENDS_AT_ONCE  # the media in flight when the first refusal came, once each
    assert not [path for path in put if path.endswith(".m3u8")]
    assert len(digests(ladder)) == LADDER_FILES


async def test_a_package_whose_server_keeps_failing_is_a_platform_error_after_its_retries(
    tmp_path: Path, ffmpeg: str, dav_server: DavServer  # noqa: F811
) -> None:
    """503 on every try: DeliveryFailed (platform_error, so another attempt runs) naming the tries; the package stays."""
    ladder = await make_ladder(ffmpeg, tmp_path / "job1")
    delivery = HttpDelivery(f"{dav_server.url}/down/", AllowList.parse([dav_server.netloc]), 2, quick())
    with pytest.raises(DeliveryFailed, match="after 2 tries: .*503 Service Unavailable") as failed:
        await delivery.deliver(ladder)
    assert failed.value.reason is FailureReason.PLATFORM_ERROR
    assert not [path for path in put_paths(dav_server) if path.endswith(".m3u8")]
    assert len(digests(ladder)) == LADDER_FILES
