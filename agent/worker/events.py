"""The agent's end of the event channel, ``WS /nodes/{id}/events``.

See "Extensions to the protocol" in docs/architecture.rst for the events.

Push events are a bonus: polling and heartbeats carry on whatever happens
here. A master that refuses the websocket handshake (the original Go master
answers 404, ours without the route 403) has no channel: that is said once,
at info level, and the listener ends. A channel that breaks is opened again
with backoff, and because events may have been missed meanwhile, every
(re)connection is reported as a ``job_available`` wake-up.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
import trio_websocket

from agent.models import AgentEvent
from agent.worker.backoff import Backoff

if TYPE_CHECKING:
    import ssl

__all__ = ["events_url", "listen_events"]

log = logging.getLogger(__name__)

# A handshake slower than this is a master in trouble; try again later.
CONNECT_TIMEOUT_S = 10.0
# Closing politely must not hold up a shutdown.
DISCONNECT_TIMEOUT_S = 2.0


def events_url(master_url: str, node_id: str) -> str:
    """``http://m:8080`` -> ``ws://m:8080/nodes/<id>/events`` (``https`` -> ``wss``), keeping a path prefix."""
    parts = urllib.parse.urlsplit(master_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = f"{parts.path.rstrip('/')}/nodes/{urllib.parse.quote(node_id, safe='')}/events"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


def _event(message: str | bytes) -> AgentEvent | None:
    try:
        return AgentEvent.from_json(json.loads(message))
    except ValueError as exc:
        log.debug("ignoring an event that does not parse (%s): %r", exc, message[:200])
        return None


async def listen_events(
    master_url: str,
    node_id: str,
    on_event: Callable[[AgentEvent], None],
    *,
    api_key: str = "",
    ssl_context: ssl.SSLContext | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Call ``on_event`` for every event the master pushes to this node.

    Runs until cancelled while the master has an event channel; returns when
    it has none (the handshake was refused with a 4xx status), after one info
    line. ``on_event`` runs in this task and must not block: set an event,
    cancel a scope. Unknown event types reach it too; it should ignore them.

    Args:
        master_url: the master's base URL, as given to ``--master``.
        node_id: this agent's node id from registration.
        on_event: called per event, and with ``job_available`` after each
            (re)connection, as a wake-up may have been missed.
        api_key: sent as ``Authorization: Bearer``, as on every HTTP call.
        ssl_context: for an ``https`` master (mTLS, a private CA).
        backoff: delays between reconnections; default 0.5 s doubling to 30 s.

    Example::

        nursery.start_soon(partial(listen_events, url, node_id, poller.on_event, api_key=key))
    """
    url = events_url(master_url, node_id)
    headers = [(b"Authorization", f"Bearer {api_key}".encode())] if api_key else []
    delay = backoff if backoff is not None else Backoff()
    while True:
        try:
            async with trio_websocket.open_websocket_url(
                url,
                ssl_context,
                extra_headers=headers,
                connect_timeout=CONNECT_TIMEOUT_S,
                disconnect_timeout=DISCONNECT_TIMEOUT_S,
            ) as ws:
                log.debug("event channel open: %s", url)
                delay.reset()
                on_event(AgentEvent.job_available())
                while True:
                    if (event := _event(await ws.get_message())) is not None:
                        on_event(event)
        except trio_websocket.ConnectionRejected as exc:
            if 400 <= exc.status_code < 500:
                log.info(
                    "The master has no event channel (%s answered %d); it will not push events",
                    url, exc.status_code,
                )
                return
            log.debug("event channel refused (%d); trying again", exc.status_code)
        except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError) as exc:
            log.debug("event channel unavailable (%r); polling carries on", exc)
        await trio.sleep(delay.next())
