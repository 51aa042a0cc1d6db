"""The event channel (``WS /nodes/{id}/events``): the master pushes wake-ups, cancels and drains.

Events are a bonus on top of polling and heartbeats, never the only way a
node learns something: a node that is not connected, or misses an event,
still gets the job on its next claim and the cancel on its next heartbeat. So
the hub never waits for a slow client: each connection has a small buffer,
and when it is full the event is dropped for that client.

``job_available`` goes only to nodes that have not long-polled: a node that
long-polls is woken by its long-poll, one per job (:mod:`.doorbell`), and a
push to every connected node on every job made each job cost the master a
message per node of the farm (``bench/farm_sim.py``, agents holding their
channels as the agent does: p99 claim latency over 5 s with 200 agents).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import trio

from ..models import AgentEvent
from .store import Store

__all__ = ["EventHub"]

log = logging.getLogger("agent.master")

# Events waiting per connection; a client this far behind reads from a dead socket.
BUFFER = 16


class EventHub:
    """The connected nodes, one channel each, and the events to send them."""

    def __init__(self) -> None:
        self._clients: dict[str, trio.MemorySendChannel[AgentEvent]] = {}
        self._long_polling: set[str] = set()
        # The connected nodes that have not long-polled: those told of new jobs.
        self._told_of_jobs: set[str] = set()

    def note_long_poll(self, node_id: str) -> None:
        """``node_id`` long-polls: it needs no ``job_available`` push."""
        self._long_polling.add(node_id)
        self._told_of_jobs.discard(node_id)

    def forget(self, node_id: str) -> None:
        """The node registered again or left: what it does next is for it to show."""
        self._long_polling.discard(node_id)
        if node_id in self._clients:
            self._told_of_jobs.add(node_id)

    @property
    def connected(self) -> int:
        """Open event connections, for the master's metrics."""
        return len(self._clients)

    @contextlib.contextmanager
    def subscribe(self, node_id: str) -> Iterator[trio.MemoryReceiveChannel[AgentEvent]]:
        """The events for ``node_id`` while the block runs.

        A node has one channel: subscribing again (a restarted agent, whose
        old connection has not timed out yet) ends the older subscription,
        whose iteration then stops, so connections cannot pile up.
        """
        send, receive = trio.open_memory_channel[AgentEvent](BUFFER)
        if (older := self._clients.get(node_id)) is not None:
            older.close()
        self._clients[node_id] = send
        if node_id not in self._long_polling:
            self._told_of_jobs.add(node_id)
        try:
            with send, receive:
                yield receive
        finally:
            if self._clients.get(node_id) is send:
                del self._clients[node_id]
                self._told_of_jobs.discard(node_id)

    def send(self, node_id: str, event: AgentEvent) -> None:
        """Queue ``event`` for the connection of ``node_id``; a no-op if it has none."""
        channel = self._clients.get(node_id)
        if channel is None:
            return
        try:
            channel.send_nowait(event)
        except trio.WouldBlock:
            log.debug("event %s for node %s dropped: its connection is not reading", event, node_id)
        except trio.ClosedResourceError:
            pass

    async def serve_wake_ups(
        self, store: Store, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Tell the connected nodes that do not long-poll when jobs become pending; runs until cancelled.

        The store rings for jobs queued through this master and, on PostgreSQL,
        through any other, so an agent connected here hears of them all.
        """
        task_status.started()
        while True:
            await store.doorbell.rung.wait()
            for node_id in list(self._told_of_jobs):
                self.send(node_id, AgentEvent.job_available())
