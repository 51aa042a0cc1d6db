"""Request bodies arrive in time, and not too many at once.

hypercorn bounds the headers (its keep-alive timeout also closes a connection
whose request headers do not arrive) but not the body: a client may send one
byte every few seconds for ever, and hold a handler and its buffer while it
does. :class:`BodyLimits` sits between hypercorn and the app and

* gives each body ``timeout`` seconds to arrive whole; a slower one is
  answered 408 and its connection closed;
* lets at most ``max_in_flight`` bodies arrive at once (each may be up to
  1 MiB); one more is answered 503 with ``Retry-After`` before its body is read.

Requests without a body (``/health``, listings, the long-poll) pass untouched,
so a crowd of slow uploads never keeps them waiting.

Streamed uploads (``PATCH /artifacts/...``, see :data:`STREAMED_PREFIX`) may be
gigabytes that take an hour on a slow link: their handler writes each piece
to disk as it comes and holds no buffer, so they take no slot, and
``timeout`` bounds the wait for each next piece instead of the whole body. A
sender that stalls is cut just the same; one that keeps sending is not.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import trio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODIES_IN_FLIGHT", "STREAMED_PREFIX", "BodyLimits"]

# Bodies are at most 1 MiB (app.MAX_BODY_BYTES): 256 of them bound the buffers to 256 MiB,
# and a farm's agents rarely post more than a few results at the same instant.
MAX_BODIES_IN_FLIGHT = 256
# Requests under this path stream their bodies to disk (agent/master/artifacts.py).
STREAMED_PREFIX = "/artifacts/"
# A declared body this large at most, left unread by the handler, is read before the answer ends, so the
# connection can take the next request (the largest body the app takes, app.MAX_BODY_BYTES).
DRAIN_MAX_BYTES = 1024 * 1024


def _has_body(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def _answer(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> None:
    """Read what is left of a body nobody read; past its deadline, leave it."""
    with contextlib.suppress(HTTPException):  # the deadline passed: hypercorn closes the connection instead
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


class BodyLimits:
    """ASGI middleware bounding how long a request body may take, and how many arrive at once.

    Args:
        app: the application; it reads bodies as usual.
        timeout: seconds from the request's start until its body has arrived whole.
        max_in_flight: bodies arriving at the same time; one more is refused at once.
    """

    def __init__(self, app: ASGIApp, *, timeout: float, max_in_flight: int = MAX_BODIES_IN_FLIGHT) -> None:
        self._app = app
        self._timeout = timeout
        self._slots = trio.CapacityLimiter(max_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self._app(scope, receive, send)
            return
        if scope["path"].startswith(STREAMED_PREFIX):
            await self._app(scope, self._paced(receive), send)
            return
        slot = object()
        try:
            self._slots.acquire_on_behalf_of_nowait(slot)
        except trio.WouldBlock:
            await _answer(
                send, 503, f"{self._slots.total_tokens} request bodies are arriving already; send again shortly",
                {"Retry-After": "1", "Connection": "close"},
            )
            return
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release_on_behalf_of(slot)

        bounded = self._bounded(receive, release)
        declared = Headers(scope=scope).get("content-length", "")
        drainable = declared.isdigit() and int(declared) <= DRAIN_MAX_BYTES

        async def send_after_body(message: Message) -> None:
            # A handler may answer without reading the body (a 404, a route that takes none). If the
            # answer ended before the body arrived, hypercorn would close the connection under a
            # client that is free to send its next request on it: read the rest first. A body
            # too large to take is refused at once instead (413), and its connection closed.
            last = message["type"] == "http.response.body" and not message.get("more_body", False)
            if last and drainable and not released:
                await _drain(bounded)
            await send(message)

        try:
            await self._app(scope, bounded, send_after_body)
        finally:
            release()

    def _paced(self, receive: Receive) -> Receive:
        """``receive`` with ``timeout`` for each piece of the body, for streamed uploads."""

        whole = False

        async def paced_receive() -> Message:
            nonlocal whole
            if whole:
                return await receive()
            with trio.move_on_after(self._timeout):
                message = await receive()
                whole = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            raise HTTPException(
                408, f"the upload sent nothing for {self._timeout:g} s; resume it from the offset HEAD gives",
                headers={"Connection": "close"},
            )

        return paced_receive

    def _bounded(self, receive: Receive, arrived: Callable[[], None]) -> Receive:
        """``receive`` with a deadline until the last part of the body; then as it was."""
        deadline = trio.current_time() + self._timeout
        whole = False

        async def bounded_receive() -> Message:
            nonlocal whole
            if whole:
                return await receive()
            with trio.move_on_at(deadline):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    whole = True
                    arrived()
                return message
            # The app answers this like any HTTPException; "close" stops the client's trickle.
            raise HTTPException(
                408, f"the request body did not arrive within {self._timeout:g} s; send it whole and faster",
                headers={"Connection": "close"},
            )

        return bounded_receive
