"""HTTP(S) job inputs, downloaded by the worker through its address check.

FFmpeg is never given an http(s) URL: it would resolve the host itself,
follow redirects anywhere and fetch whatever a playlist names. The worker
downloads the input into a directory of its own instead, and FFmpeg reads the
local file with no network protocol allowed (``-protocol_whitelist``, see
``engines/ffmpeg.py``). Each request of a job, the URL itself, each redirect
(at most :data:`MAX_REDIRECTS`, followed here, not by the client), the
playlists and each segment, key and init section, goes through
:class:`GuardedBackend`: it resolves the host, checks every answer
(``agent.worker.netguard``) and connects to the checked address, while TLS
still sends and verifies the host name. A DNS answer that changes between
check and connection (rebinding) therefore changes nothing.

Requests go through httpcore, httpx's own connection engine, because its
network backend is the one seam where the address is chosen; httpx's
transports do not expose it. The CA store is httpx's (certifi).

Failures fall in two classes: :class:`InputRejected` is the job's fault
(a 4xx, a refused address, a playlist we do not play, too many redirects)
and becomes ``user_error``; :class:`InputUnavailable` is not (network errors,
5xx, a deadline, an input larger than the disk can hold) and carries the
failure reason to report.
"""

from __future__ import annotations

import contextlib
import http
import math
import posixpath
import secrets
import shutil
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import httpcore
import httpx
import trio

from agent.models import FailureReason
from agent.scenarios import JobRejected
from agent.worker import hls
from agent.worker.netguard import AllowList, DestinationUnavailable, resolve_checked

__all__ = [
    "MAX_REDIRECTS",
    "GuardedBackend",
    "InputRejected",
    "InputUnavailable",
    "open_http_input",
]

# Browsers follow about 20; an input with more than a CDN hop or two is a loop or a trick.
MAX_REDIRECTS = 5
# A playlist is text; anything larger is not one we want to parse.
MAX_PLAYLIST_BYTES = 4 * 1024 * 1024
# An AES-128 key is 16 bytes; anything much larger is not a key.
MAX_KEY_BYTES = 4096
# Connect fails fast; a read may wait for a slow origin, but a silent server
# ends the job instead of holding its slot.
TIMEOUTS = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
ALLOW_FLAG = "--allow-private-inputs"
_REDIRECTS = (301, 302, 303, 307, 308)
_HEADERS = [(b"User-Agent", b"ffrtmp-agent"), (b"Accept-Encoding", b"identity")]
# FFmpeg's HLS demuxer opens only local files with these extensions (its allowed_extensions).
_FFMPEG_EXTENSIONS = frozenset(
    "3gp aac avi ac3 eac3 flac mkv m4a m4s m4v mpg mov mp2 mp3 mp4 mpeg mpegts ogg ogv oga ts vob wav "
    "cmfv cmfa ec3 fmp4".split()
)
# FFmpeg's HLS demuxer opens every local entry, keys too, only with one of
# those extensions (an inline data: URI is refused alike), so keys get one.
_DEFAULT_EXTENSION = {"segment": ".ts", "map": ".mp4", "key": ".key.ts"}


class InputRejected(JobRejected):
    """The job's input URL cannot be used, and no retry would change that: ``user_error``."""

    def __init__(self, message: str) -> None:
        super().__init__("input", message)


class InputUnavailable(DestinationUnavailable):
    """The input could not be fetched for a reason outside the job; ``reason`` is the failure to report.

    ``network_error`` for connections, timeouts and 5xx answers (retried, as
    the server may recover), ``resource_error`` when it does not fit on this
    worker's disk (another worker may have room), ``timeout`` when the job's
    own time ran out while downloading.
    """


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to addresses the allow-list accepts, and to no other.

    httpcore calls :meth:`connect_tcp` with the URL's host; the TLS layer
    above it still uses that host for SNI and certificate checks.
    """

    def __init__(self, allow: AllowList, *, field: str = "input", flag: str = ALLOW_FLAG) -> None:
        self._allow = allow
        # The job parameter and the operator's flag a refusal names (outputs go through it too).
        self._field = field
        self._flag = flag
        self._inner = httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                address = await resolve_checked(host, port, self._allow, field=self._field, flag=self._flag)
        except trio.TooSlowError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s") from None
        return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("jobs never reach unix sockets")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class _Download:
    """The requests of one input, sharing one connection pool and one byte budget."""

    def __init__(self, pool: httpcore.AsyncConnectionPool, directory: Path, max_bytes: int) -> None:
        self.pool = pool
        self.directory = directory
        self.remaining = max_bytes
        self.max_bytes = max_bytes

    async def get(self, url: str, path: Path, *, limit: int | None = None) -> str:
        """Save the body of ``url`` (after redirects) at ``path``; returns the final URL."""
        for _ in range(MAX_REDIRECTS + 1):
            _check_scheme(url)
            try:
                async with self.pool.stream(
                    "GET", url, headers=_HEADERS, extensions={"timeout": TIMEOUTS}
                ) as response:
                    location = _header(response, b"location")
                    if response.status in _REDIRECTS and location:
                        url = urllib.parse.urljoin(url, location)
                        continue
                    _check_status(url, response.status)
                    await self._save(url, response, path, limit)
                    return url
            except (httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError) as exc:
                raise InputUnavailable(f"could not fetch {url}: {exc or type(exc).__name__}") from exc
            except httpcore.UnsupportedProtocol as exc:
                raise InputRejected(f"{url} is not an http(s) URL") from exc
        raise InputRejected(f"{url} redirects more than {MAX_REDIRECTS} times; give the final URL")

    async def _save(self, url: str, response: httpcore.Response, path: Path, limit: int | None) -> None:
        cap = self.remaining if limit is None else min(limit, self.remaining)
        length = _header(response, b"content-length")
        if length.isdigit() and int(length) > cap:
            self._too_large(url, limit)
        async with await trio.open_file(path, "wb") as out:
            async for chunk in response.aiter_stream():
                cap -= len(chunk)
                if cap < 0:
                    self._too_large(url, limit)
                self.remaining -= len(chunk)
                await out.write(chunk)

    def _too_large(self, url: str, limit: int | None) -> None:
        if limit is not None and limit < self.remaining:
            raise InputRejected(f"{url} is larger than {limit // 1024} KiB, too large for a playlist or key")
        raise InputUnavailable(
            f"the input at {url} is larger than the {self.max_bytes // 2**20} MiB this worker's disk can take "
            "(its free space less --min-free-mb); run the job on a worker with more space",
            FailureReason.RESOURCE_ERROR,
        )

    async def hls(self, playlist: Path, url: str) -> Path:
        """Fetch what the playlist at ``playlist`` (fetched from ``url``) needs; returns the local playlist."""
        try:
            text = playlist.read_text("utf-8")
            variant = hls.best_variant(text)
            if variant is not None:
                url = await self.get(urllib.parse.urljoin(url, variant), playlist, limit=MAX_PLAYLIST_BYTES)
                text = playlist.read_text("utf-8")
            names: dict[str, str] = {}
            for number, resource in enumerate(hls.media_resources(text)):
                absolute = urllib.parse.urljoin(url, resource.uri)
                names[resource.uri] = f"{resource.kind}{number:05d}{_extension(absolute, resource.kind)}"
                limit = MAX_KEY_BYTES if resource.kind == "key" else None
                await self.get(absolute, self.directory / names[resource.uri], limit=limit)
            index = self.directory / "index.m3u8"
            index.write_text(hls.rewrite_media(text, names), "utf-8")
            return index
        except UnicodeDecodeError:
            raise InputRejected(f"the HLS playlist at {url} is not UTF-8 text") from None
        except hls.PlaylistRejected as exc:
            raise InputRejected(f"{exc} (at {url})") from None


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputRejected(f"{url} is not an http(s) URL; inputs, redirects and playlist entries must be")


def _check_status(url: str, status: int) -> None:
    try:
        phrase = f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        phrase = str(status)
    if 400 <= status < 500:
        raise InputRejected(f"{url} answered {phrase}; check the URL and that it is readable without a login")
    if status >= 500:
        raise InputUnavailable(f"{url} answered {phrase}; the server may recover, so the job is retried")
    if status != 200:
        raise InputRejected(f"{url} answered {phrase}, not 200 with the media")


def _header(response: httpcore.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def _extension(url: str, kind: str) -> str:
    """The URL's extension when FFmpeg's HLS demuxer accepts it for a local file, else one for the kind."""
    suffix = posixpath.splitext(urllib.parse.urlsplit(url).path)[1].lower()
    return suffix if suffix[1:] in _FFMPEG_EXTENSIONS and kind != "key" else _DEFAULT_EXTENSION[kind]


def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


@contextlib.asynccontextmanager
async def open_http_input(
    url: str, work_dir: Path, *, allow: AllowList, max_bytes: int, deadline: float | None = None
) -> AsyncIterator[Path]:
    """Download the input at ``url`` under ``work_dir``; yields the local path FFmpeg should read.

    An HLS playlist (sniffed from the body, whatever the URL says) is fetched
    with everything it needs and the path is the rewritten playlist; any
    other body is yielded as is. The files are removed when the block exits,
    however it exits.

    Args:
        url: the job's validated http(s) input.
        work_dir: the job's files go to a fresh directory below it.
        allow: the private destinations the operator allowed (``--allow-private-inputs``).
        max_bytes: the most all of the input's files may take on disk.
        deadline: seconds the whole download may take (the job's timeout); None for no limit.

    Raises:
        InputRejected: the job's fault, see the module docstring.
        InputUnavailable: anything else that stops the download.

    Example::

        async with open_http_input(url, work_dir, allow=AllowList(), max_bytes=2**30) as path:
            argv = encode_argv(ffmpeg, spec, str(path), output)
    """
    directory = work_dir / "fetch" / secrets.token_hex(8)
    directory.mkdir(parents=True)
    try:
        with trio.move_on_after(math.inf if deadline is None else deadline) as timer:
            path = await _download(url, directory, allow, max_bytes)
        if timer.cancelled_caught:
            raise InputUnavailable(
                f"downloading {url} took longer than the job's timeout of {deadline:g}s", FailureReason.TIMEOUT
            )
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _download(url: str, directory: Path, allow: AllowList, max_bytes: int) -> Path:
    async with httpcore.AsyncConnectionPool(
        ssl_context=_ssl_context(), network_backend=GuardedBackend(allow), max_connections=4, retries=0
    ) as pool:
        download = _Download(pool, directory, max_bytes)
        path = directory / "input"
        final_url = await download.get(url, path)
        with path.open("rb") as body:
            head = body.read(1024)
        if hls.looks_like_dash(head):
            raise InputRejected(
                f"{url} is a DASH manifest; DASH inputs are not supported, give an MP4 or HLS URL"
            )
        if hls.looks_like_playlist(head):
            return await download.hls(path, final_url)
        return path
