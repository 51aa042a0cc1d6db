"""A request whose body the handler never reads leaves its connection usable for the next request.

A real master on 127.0.0.1 port 0, spoken to over one raw socket, so the test
controls when each part of the body arrives.
"""

from __future__ import annotations

import pytest
import trio

from agent.config import MasterConfig
from agent.master.server import serve_master

pytestmark = pytest.mark.timeout(30)

BODY = b'{"note": "' + b"x" * 2000 + b'"}'


async def answer(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bytes]:
    """One answer's status and body, read from ``stream`` (leftovers stay in ``buffer``)."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = await stream.receive_some(65536)
        assert chunk, "the master closed the connection instead of answering"
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1").lower().split("\r\n")
    del buffer[: end + 4]
    length = next(int(line.split(":", 1)[1]) for line in head if line.startswith("content-length:"))
    while len(buffer) < length:
        buffer += await stream.receive_some(65536)
    body = bytes(buffer[:length])
    del buffer[:length]
    return int(head[0].split()[1]), body


async def test_an_unread_body_arriving_late_does_not_close_the_connection(nursery: trio.Nursery) -> None:
    """404 for an unknown job's pause, answered before its body is in; the next request gets its answer."""
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    host, _, port = url.removeprefix("http://").rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        head = (f"POST /jobs/no-such-job/pause HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n").encode()
        await stream.send_all(head + BODY[:10])
        await trio.sleep(0.2)  # the handler has answered by now; the rest of the body comes after
        await stream.send_all(BODY[10:])
        buffer = bytearray()
        status, _ = await answer(stream, buffer)
        assert status == 404
        await stream.send_all(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert await answer(stream, buffer) == (200, b'{"status":"healthy"}')
