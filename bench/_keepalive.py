"""A client of the master that costs its process little: HTTP/1.1 on one kept-alive socket, bytes built by the caller.

The load benchmarks need many requests per second from one Python process
sharing the machine's cores with the master; the agent's own client (httpx
and the wire types) would cost more than the master they measure. The
requests and answers are the real protocol's (same routes, bodies and
tokens); only the client is thin. It reads what hypercorn sends: a status
line, headers and a ``Content-Length`` body.
"""

from __future__ import annotations

import attrs
import trio

__all__ = ["KeptAlive", "ProtocolError"]

# Bytes read from the socket at a time; an answer here is a few hundred bytes.
RECEIVE_BYTES = 65536
# A connection idle this long is replaced before use: hypercorn closes idle ones after
# its keep-alive timeout (the master sets 5 s), and a request sent as it closes is lost.
IDLE_REUSE_S = 4.0


class ProtocolError(Exception):
    """The master answered something this client cannot read, or could not be reached; the message says which."""


@attrs.define
class KeptAlive:
    """One HTTP/1.1 connection: a request out, its answer (status, body) back, one at a time.

    A new connection is opened when there is none, when the last answer
    said ``Connection: close`` (hypercorn's limit of requests per
    connection), after :data:`IDLE_REUSE_S` idle, and after a request that
    failed or was cancelled half-way, whose answer would be read by the next.
    """

    host: str
    port: int
    _stream: trio.SocketStream | None = None
    _buffer: bytearray = attrs.field(factory=bytearray)
    _last_used: float = -IDLE_REUSE_S

    def prepared(self, method: str, target: str, token: str, body: bytes = b"") -> bytes:
        """The request's bytes; build once, send many times."""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return head.encode() + b"\r\n" + body

    async def connect(self) -> None:
        """Open a fresh connection now (closing the one held), so the next request does not pay for it."""
        await self.aclose()
        try:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ProtocolError(f"cannot reach the master at {self.host}:{self.port}: {exc}") from exc
        self._last_used = trio.current_time()

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` (from :meth:`prepared`) and return the answer's status and body.

        Raises:
            ProtocolError: the connection broke or the answer is not one this client reads.
        """
        if self._stream is None or trio.current_time() - self._last_used > IDLE_REUSE_S:
            await self.connect()
        stream = self._stream
        assert stream is not None
        self._stream = None  # held again only once the answer is read whole
        try:
            status, body, close = await self._exchange(stream, request)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await stream.aclose()
            raise ProtocolError(f"the connection to the master at {self.host}:{self.port} broke: {exc!r}") from exc
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
        if close:
            await stream.aclose()
        else:
            self._stream, self._last_used = stream, trio.current_time()
        return status, body

    async def _exchange(self, stream: trio.SocketStream, request: bytes) -> tuple[int, bytes, bool]:
        self._buffer.clear()
        await stream.send_all(request)
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            await self._receive(stream)
        head = bytes(self._buffer[:end]).decode("latin-1").lower().split("\r\n")
        del self._buffer[: end + 4]
        status = int(head[0].split(" ", 2)[1])
        fields = dict(line.split(":", 1) for line in head[1:])
        if "content-length" not in fields:
            raise ProtocolError(f"an answer without Content-Length: {head}")
        length = int(fields["content-length"])
        while len(self._buffer) < length:
            await self._receive(stream)
        body = bytes(self._buffer[:length])
        return status, body, fields.get("connection", "").strip() == "close"

    async def _receive(self, stream: trio.SocketStream) -> None:
        chunk = await stream.receive_some(RECEIVE_BYTES)
        if not chunk:
            raise ProtocolError("the master closed the connection before answering")
        self._buffer += chunk

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
