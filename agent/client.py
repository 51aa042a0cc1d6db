"""The master's HTTP API as typed calls, shared by the worker agent and the CLI.

Transport failures and HTTP errors are translated here, once, into a small
hierarchy whose classes say what the caller can do about them:

* ``MasterUnavailable`` — connection refused, timeout, 5xx: back off and retry;
* ``AuthError`` — 401/403: a configuration error, retrying cannot help;
* ``TLSVerifyError`` — the master's certificate did not verify: also configuration;
* ``UnknownToMaster`` — 404, a normal answer: the master forgot the node or job;
* ``ExtensionMissing`` — a 404 to the route itself: the master lacks that extension (older, or the Go one);
* ``StateConflict`` — 409, a normal answer: the job's state forbids the change (a lost lease);
* ``NameInUse`` — a registration refused: another running agent holds the node name;
* ``StorageFull`` — 507: the master's artefact store has no room for an upload;
* ``RequestRejected`` — any other 4xx, with the master's message.

Artefacts (files uploaded for jobs, and their outputs) move as streams: an
upload asks how much of the file the master holds (``HEAD``) and sends only
the rest (``PATCH`` from that offset), a download is written to a temporary
file, its SHA-256 checked, then renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

import attrs
import httpx
import trio

from agent.config import API_KEY_ENV
from agent.models import (
    HeartbeatReply,
    HeartbeatReport,
    Job,
    JobAttempt,
    JobProgress,
    JobRequest,
    JobResult,
    Node,
    NodeRegistered,
    NodeRegistration,
    ResultAck,
    log_tail,
)

__all__ = [
    "ArtifactCorrupt",
    "AuthError",
    "ExtensionMissing",
    "Forbidden",
    "JobPage",
    "MasterClient",
    "MasterError",
    "MasterUnavailable",
    "NameInUse",
    "RequestRejected",
    "StateConflict",
    "StorageFull",
    "TLSVerifyError",
    "UnknownToMaster",
]

# Long enough for a loaded SQLite master, short enough that a dead one is noticed.
DEFAULT_TIMEOUT_S = 10.0
# The most jobs a master puts on one page of GET /jobs.
LARGEST_PAGE = 1000
# Pieces of a file sent or written at a time.
TRANSFER_CHUNK_BYTES = 256 * 1024
# After an upload's last byte the master hashes the whole file before it answers: minutes for large ones.
UPLOAD_ANSWER_TIMEOUT_S = 600.0
# An upload told another offset (409) starts again from it this many times before giving up.
UPLOAD_OFFSET_RETRIES = 3


def file_sha256(path: Path, on_progress: Callable[[int], None] | None = None) -> str:
    """The SHA-256 of a file in hex, read in pieces; ``on_progress`` gets the bytes read so far. Blocking."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done)
    return digest.hexdigest()


async def _file_chunks(path: Path, start: int, on_progress: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    sent = start
    async with await trio.open_file(path, "rb") as source:
        await source.seek(start)
        while chunk := await source.read(TRANSFER_CHUNK_BYTES):
            yield chunk
            sent += len(chunk)
            if on_progress is not None:
                on_progress(sent)


@attrs.frozen
class JobPage:
    """One page of ``GET /jobs``; ``next_cursor`` reads on, and is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None = None


class MasterError(Exception):
    """Any failure talking to the master."""


class MasterUnavailable(MasterError):
    """The master cannot be reached or failed (5xx): transient, worth retrying."""


class AuthError(MasterError):
    """The master refused our credentials (401/403); only a configuration change helps."""


class TLSVerifyError(MasterError):
    """The master's TLS certificate did not verify; only trusting its CA, another name, or not checking helps.

    Args:
        url: the master as given to ``--master``.
        reason: OpenSSL's words for the failure.
        names: when the certificate verified but is for other names (``Hostname
            mismatch``), the names it is for, as far as known: a CA would not
            help then, the address in ``--master`` or the certificate must change.
    """

    def __init__(self, url: str, reason: str, names: Sequence[str] | None = None) -> None:
        if names is None:
            advice = (
                "pass the CA certificate that signed it with --ca, or turn verification off with "
                "--insecure-skip-verify (insecure: anyone on the path can then impersonate the master)"
            )
        else:
            host = urllib.parse.urlsplit(url).hostname or url
            flag = "--cert-ips" if _is_address(host) else "--cert-hosts"
            known = f"it names {', '.join(names)}: use one of those in --master, or " if names else ""
            advice = (
                f"the certificate does not name {host} ({known}give the master a certificate for {host}; "
                f"with --generate-cert, delete master.crt and master.key and start it with {flag} {host})"
            )
        super().__init__(f"cannot verify the TLS certificate of the master at {url} ({reason}); {advice}")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UnknownToMaster(MasterError):
    """404: the node or job is unknown to the master (or the call is an extension it lacks).

    The client's view of the store's :class:`agent.master.store.NotFound`.
    """


class ExtensionMissing(UnknownToMaster):
    """404 to an extension's route while the job it names exists: this master (an older one, or
    the Go master) does not offer the call; only upgrading it helps."""


class StateConflict(MasterError):
    """409: the job's state forbids the change; for a worker, the job is no longer leased to it.

    The client's view of the master's :class:`agent.master.scheduler.Conflict`.
    """


class Forbidden(AuthError):
    """403: the request spoke for a node without that node's current token."""


class NameInUse(MasterError):
    """409 to a registration: a running agent holds the node name; only another name (or waiting) helps."""


class RequestRejected(MasterError):
    """Another 4xx: the master says the request is wrong, and why."""


class StorageFull(MasterError):
    """507: the master's artefact store has no room for the upload (its quota, or its disk)."""


class ArtifactCorrupt(MasterError):
    """A downloaded artefact does not hash to its name; nothing was written."""


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text.strip()


def _cert_verify_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check failure behind a transport error, if that is what it was.

    httpx wraps httpcore's error, which wraps the stream's, which wraps the ssl one.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            break
        seen = seen.__cause__ or seen.__context__
    return seen if isinstance(seen, ssl.SSLCertVerificationError) else None


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the certificate is
# trusted, but for other names.
_NAME_MISMATCH = (62, 64)
# Mutual TLS failures reach the client as a bare close or reset after the handshake:
# trio drops the server's alert.
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_MTLS_HINT = (
    "; the master closed the TLS connection without answering: if it requires client certificates "
    "(mutual TLS), pass one it trusts with --cert and --key"
)


def _auth_message(url: str, response: httpx.Response) -> str:
    said = _error_text(response) or response.reason_phrase
    if response.status_code == 403:
        return f"{url} answered 403: {said}"
    if "missing" in said.lower():
        advice = "the master requires an API key: pass it with --api-key or set " + API_KEY_ENV
    else:
        advice = "the master refused the API key: check --api-key or " + API_KEY_ENV
    return f"{url} answered {response.status_code} ({said}); {advice}"


@attrs.define
class MasterClient:
    """Typed calls to one master. Use as ``async with MasterClient(url, key) as client``.

    Args:
        base_url: the master, e.g. ``http://localhost:8080``.
        api_key: sent as ``Authorization: Bearer``; empty sends nothing.
        node_token: sent instead of the key on calls that speak for the node (claims,
            heartbeats, progress, results); set by :meth:`register` when the master
            hands one out. Empty (the Go master) sends the key there too.
        timeout: seconds per request; a long-poll adds its own wait on top.
        verify: how an ``https`` master is trusted: True for the system store,
            or an :class:`ssl.SSLContext` from :func:`agent.tls.client_context`
            (a private CA, a client certificate for mutual TLS).
        transport: replaces the network, for injecting faults in tests.
    """

    base_url: str
    api_key: str = attrs.field(default="", repr=False)
    node_token: str = attrs.field(default="", repr=False)
    # The node this client registered as; with node_token, set by register().
    node_id: str = ""
    timeout: float = DEFAULT_TIMEOUT_S
    verify: bool | str | ssl.SSLContext = True
    transport: httpx.AsyncBaseTransport | None = None
    _http: httpx.AsyncClient = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.base_url = self.base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=self.timeout,
            verify=self.verify,
            transport=self.transport,
        )

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """The context an ``https`` master is reached with, for the event channel to share; else None."""
        https = self.base_url.lower().startswith("https://")
        return self.verify if https and isinstance(self.verify, ssl.SSLContext) else None

    async def __aenter__(self) -> MasterClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """One request; returns the decoded JSON body (None when empty)."""
        if timeout is not None:
            kwargs["timeout"] = timeout
        async with self._translated():
            response = await self._http.request(method, path, **kwargs)
        self._check(response, method, path)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise MasterUnavailable(
                f"the master at {self.base_url} sent a body that is not JSON for {method} {path}"
            ) from None

    @contextlib.asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """Transport failures of the requests in the block, as :class:`MasterError` classes."""
        try:
            yield
        except httpx.TransportError as exc:
            if (failed := _cert_verify_error(exc)) is not None:
                names = None
                if failed.verify_code in _NAME_MISMATCH:
                    from agent.tls import certificate_names

                    url = self._http.base_url
                    names = await certificate_names(url.host, url.port or 443)
                raise TLSVerifyError(self.base_url, failed.verify_message or str(failed), names) from exc
            hint = ""
            if isinstance(exc, _DROPPED):
                # A plain request to an HTTPS port is dropped without an answer, as is one without a client certificate.
                https = self.base_url.replace("http://", "https://", 1)
                hint = _MTLS_HINT if self.tls_context else f"; the master may speak HTTPS: try --master {https}"
            raise MasterUnavailable(
                f"cannot reach the master at {self.base_url}: {exc!r}{hint}"
            ) from exc

    def _check(self, response: httpx.Response, method: str, path: str) -> None:
        """Raise the error class for a 4xx or 5xx answer (its body must have been read)."""
        status = response.status_code
        if status == 403:
            raise Forbidden(_auth_message(self.base_url, response))
        if status == 401:
            raise AuthError(_auth_message(self.base_url, response))
        if status == 507:
            raise StorageFull(f"the master at {self.base_url} has no room: {_error_text(response)}")
        if status >= 500 or status == 429:  # 429: refused for a while (too many wrong keys from here)
            raise MasterUnavailable(
                f"the master at {self.base_url} answered {status} to {method} {path}: {_error_text(response)}"
            )
        if status == 404:
            raise UnknownToMaster(f"{method} {path}: {_error_text(response)}")
        if status == 409:
            raise StateConflict(f"{method} {path}: {_error_text(response)}")
        if status >= 400:
            raise RequestRejected(f"{method} {path} was rejected ({status}): {_error_text(response)}")

    # --- worker calls ---------------------------------------------------------

    def _as_node(self, token: str = "") -> dict[str, Any]:
        """Keyword arguments making a call speak as the node: its token in place of the key."""
        token = token or self.node_token
        return {"headers": {"Authorization": f"Bearer {token}"}} if token else {}

    async def register(self, registration: NodeRegistration) -> NodeRegistered:
        """Register a new run of the node; node calls then carry the token the master handed out.

        Raises:
            NameInUse: a running agent holds the name, and this one could not prove it is that node.
        """
        try:
            body = await self._call("POST", "/nodes/register", json=registration.to_json())
        except StateConflict as exc:
            raise NameInUse(str(exc).removeprefix("POST /nodes/register: ")) from None
        registered = NodeRegistered.from_json(body)
        self.node_token = registered.node_token
        self.node_id = registered.node.id
        return registered

    async def heartbeat(self, node_id: str, report: HeartbeatReport) -> HeartbeatReply:
        """Raises UnknownToMaster when the master forgot the node: register again."""
        body = await self._call(
            "POST", f"/nodes/{node_id}/heartbeat", json=report.to_json(), **self._as_node()
        )
        # The Go master answers with a status message or nothing: no cancel channel.
        return HeartbeatReply.from_json(body) if isinstance(body, dict) else HeartbeatReply()

    async def claim_next(self, node_id: str, *, wait: float = 0.0) -> Job | None:
        """The next job leased to this node, or None when the queue is empty.

        Args:
            wait: long-poll seconds (extension); a master without it answers at once.
        """
        params: dict[str, Any] = {"node_id": node_id}
        if wait > 0:
            params["wait"] = int(wait)
        body = await self._call(
            "GET", "/jobs/next", params=params, timeout=self.timeout + wait, **self._as_node()
        )
        job = body.get("job") if isinstance(body, dict) else None
        return Job.from_json(job) if job else None

    async def send_result(self, result: JobResult, *, token: str = "") -> ResultAck:
        """Report a result; ``token`` speaks for ``result.node_id`` when that is not this run's node.

        Raises:
            StateConflict: the master gave the job to another node meanwhile.
            Forbidden: the token is not the node's (it registered again since).
        """
        # The master keeps only the tail anyway; a huge log would also pass its body limit.
        result = attrs.evolve(result, logs=log_tail(result.logs))
        body = await self._call("POST", "/results", json=result.to_json(), **self._as_node(token))
        return ResultAck.from_json(body) if isinstance(body, dict) else ResultAck(status="success")

    async def send_progress(self, job_id: str, progress: JobProgress) -> None:
        await self._call("POST", f"/jobs/{job_id}/progress", json=progress.to_json(), **self._as_node())

    async def deregister(self, node_id: str) -> None:
        """Extension: say goodbye after a clean stop, so the master shows the node offline at once.

        Raises:
            UnknownToMaster: the master forgot the node, or lacks the extension (the Go master); nothing to do.
        """
        await self._call("POST", f"/nodes/{_segment(node_id)}/deregister", **self._as_node())

    # --- operator calls -------------------------------------------------------

    async def submit_job(self, request: JobRequest) -> Job:
        return Job.from_json(await self._call("POST", "/jobs", json=request.to_json()))

    async def get_job(self, job_id: str) -> Job:
        return Job.from_json(await self._call("GET", f"/jobs/{job_id}"))

    async def list_jobs_page(
        self, *, status: str = "", node: str = "", queue: str = "", limit: int | None = None, cursor: str = ""
    ) -> JobPage:
        """One page of jobs in submission order, filtered by status, node (id or address) and queue.

        Args:
            limit: jobs on the page, 1 to 1000; None leaves it to the master (100).
            cursor: a previous page's ``next_cursor``, to read on from there.
        """
        wanted = {"status": status, "node": node, "queue": queue, "cursor": cursor, "limit": limit}
        body = await self._call("GET", "/jobs", params={k: v for k, v in wanted.items() if v})
        following = body.get("next_cursor")
        return JobPage(
            jobs=[Job.from_json(item) for item in body.get("jobs") or []],
            next_cursor=following if isinstance(following, str) and following else None,
        )

    async def list_jobs(self, status: str = "", *, node: str = "", queue: str = "") -> list[Job]:
        """Every job that matches, following the master's pages (the Go master sends all on one)."""
        jobs: list[Job] = []
        cursor = ""
        while True:
            page = await self.list_jobs_page(status=status, node=node, queue=queue, limit=LARGEST_PAGE, cursor=cursor)
            jobs += page.jobs
            if page.next_cursor is None:
                return jobs
            cursor = page.next_cursor

    async def list_nodes(self) -> list[Node]:
        body = await self._call("GET", "/nodes")
        return [Node.from_json(item) for item in body.get("nodes") or []]

    async def cancel_job(self, job_id: str) -> Job:
        return Job.from_json(await self._call("POST", f"/jobs/{job_id}/cancel"))

    async def pause_job(self, job_id: str) -> Job:
        """Hold a job out of the queue; a running one is stopped and will start again from scratch."""
        return Job.from_json(await self._call("POST", f"/jobs/{job_id}/pause"))

    async def resume_job(self, job_id: str) -> Job:
        return Job.from_json(await self._call("POST", f"/jobs/{job_id}/resume"))

    async def retry_job(self, job_id: str) -> Job:
        """Queue a failed or canceled job again, with a fresh retry budget."""
        return Job.from_json(await self._call("POST", f"/jobs/{job_id}/retry"))

    async def job_logs(self, job_id: str) -> str:
        """The encoder's stderr tail the job's last result carried."""
        body = await self._call("GET", f"/jobs/{job_id}/logs")
        return str(body.get("logs") or "") if isinstance(body, dict) else ""

    async def job_attempts(self, job_id: str) -> list[JobAttempt]:
        """Extension: the job's ended attempts, oldest first: node, start, end, outcome and error of each.

        Raises:
            UnknownToMaster: no job has that id or sequence number.
            ExtensionMissing: the master keeps no attempt history (it predates it, or is the Go master).
        """
        path = f"/jobs/{_segment(job_id)}/attempts"
        try:
            body = await self._call("GET", path)
        except UnknownToMaster:
            await self.get_job(job_id)  # an unknown job is the 404 to tell: it raises UnknownToMaster itself
            raise ExtensionMissing(
                f"the master at {self.base_url} keeps no attempt history (it does not know GET {path}): "
                "upgrade it to see a job's attempts; 'ffrtmp jobs status' shows the last one's error"
            ) from None
        attempts = body.get("attempts") if isinstance(body, dict) else None
        return [JobAttempt.from_json(item) for item in attempts or []]

    async def get_node(self, ref: str) -> Node:
        """Extension: one node, by id or name (``vm:9091``)."""
        return Node.from_json(await self._call("GET", f"/nodes/{_segment(ref)}"))

    async def delete_node(self, ref: str) -> None:
        """Forget a node (by id, or by name on this master); the jobs it held go back to the queue."""
        await self._call("DELETE", f"/nodes/{_segment(ref)}")

    async def drain_node(self, ref: str) -> Node:
        """Extension: the node finishes its running jobs and is given no more until :meth:`undrain_node`."""
        return Node.from_json(await self._call("POST", f"/nodes/{_segment(ref)}/drain"))

    async def undrain_node(self, ref: str) -> Node:
        """Extension: a drained node is given jobs again."""
        return Node.from_json(await self._call("POST", f"/nodes/{_segment(ref)}/undrain"))


    async def delete_job(self, job_id: str) -> list[str]:
        """Extension: forget a job that is not running; returns the artefacts deleted with it.

        Raises:
            StateConflict: the job is running; cancel it first.
        """
        body = await self._call("DELETE", f"/jobs/{_segment(job_id)}")
        deleted = body.get("artifacts_deleted") if isinstance(body, dict) else None
        return [str(sha256) for sha256 in deleted] if isinstance(deleted, list) else []

    # --- artefacts (extension), for the CLI with the key and for agents as their node ----------

    async def artifact_offset(self, sha256: str, *, as_node: bool = False) -> tuple[bool, int]:
        """Whether the master holds the artefact complete, and how many of its bytes it holds."""
        path = f"/artifacts/{sha256}"
        kwargs = self._as_node() if as_node else {}
        async with self._translated():
            response = await self._http.head(path, **kwargs)
        if response.status_code == 404:
            return False, int(response.headers.get("upload-offset") or 0)
        self._check(response, "HEAD", path)
        return True, int(response.headers.get("content-length") or 0)

    async def upload_artifact(
        self,
        path: Path,
        sha256: str,
        *,
        as_node: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Make sure the master holds ``path`` (whose SHA-256 is ``sha256``): send only what it lacks.

        A file the master holds already sends nothing; one it holds part of
        (an upload interrupted earlier) sends the rest. Repeating it is harmless.

        Args:
            as_node: speak with the node token (an agent delivering an output), not the API key.
            on_progress: called with the bytes of the file the master has, as they grow.

        Returns:
            The bytes sent.

        Raises:
            StorageFull: the master's store has no room for it.
            RequestRejected: the bytes did not hash to ``sha256`` on the master (422), among others.
        """
        size = path.stat().st_size
        url = f"/artifacts/{sha256}"
        kwargs = self._as_node() if as_node else {}
        sent = 0
        for _ in range(UPLOAD_OFFSET_RETRIES):
            complete, offset = await self.artifact_offset(sha256, as_node=as_node)
            if on_progress is not None:
                on_progress(size if complete else offset)
            if complete:
                return sent
            headers = {
                **kwargs.get("headers", {}),
                "Upload-Offset": str(offset),
                "Upload-Length": str(size),
                "Content-Length": str(size - offset),
                "Content-Type": "application/offset+octet-stream",
            }
            async with self._translated():
                response = await self._http.patch(
                    url, content=_file_chunks(path, offset, on_progress), headers=headers,
                    timeout=httpx.Timeout(self.timeout, read=UPLOAD_ANSWER_TIMEOUT_S),
                )
            sent += size - offset
            if response.status_code == 409:
                continue  # another offset: ask again and send from there
            self._check(response, "PATCH", url)
            if response.status_code in (200, 201):
                return sent
        raise MasterUnavailable(f"the upload of {path} to {self.base_url} kept being told another offset; try again")

    async def download_artifact(
        self,
        sha256: str,
        target: Path,
        *,
        as_node: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Write the artefact to ``target``, only once its SHA-256 is checked; returns its size.

        The bytes go to a hidden file beside ``target`` renamed into place, so
        ``target`` is never a partial or wrong file.

        Args:
            on_progress: called with the bytes received so far and the total.

        Raises:
            UnknownToMaster: the master does not hold it.
            ArtifactCorrupt: the bytes received do not hash to ``sha256``.
        """
        url = f"/artifacts/{sha256}"
        partial = target.with_name(f".{target.name}.{os.getpid()}.download")
        digest = hashlib.sha256()
        received = 0
        try:
            async with self._translated(), self._http.stream("GET", url, **(self._as_node() if as_node else {})) as got:
                if got.status_code >= 400:
                    await got.aread()
                    self._check(got, "GET", url)
                total = int(got.headers.get("content-length") or 0)
                async with await trio.open_file(partial, "wb") as out:
                    async for chunk in got.aiter_bytes(TRANSFER_CHUNK_BYTES):
                        digest.update(chunk)
                        await out.write(chunk)
                        received += len(chunk)
                        if on_progress is not None:
                            on_progress(received, total)
            if digest.hexdigest() != sha256:
                raise ArtifactCorrupt(
                    f"the {received} bytes downloaded from {self.base_url}{url} hash to {digest.hexdigest()}, "
                    "not the name; nothing was written: download it again"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return received


def _segment(ref: str) -> str:
    """``ref`` as one path segment: a node name may hold ``/``, ``?`` or ``#``."""
    return urllib.parse.quote(ref, safe=":@")
