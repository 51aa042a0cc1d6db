"""The nodes as pending jobs' waiting reasons see them: read from the store at most once per :data:`NODE_VIEW_S`.

A pending job says why no node takes it (``scheduler.waiting_reason``), and
each answer that shows one (a submit, a job, a listing) needs every node:
read and decoded per request, that was the largest cost of ``POST /jobs`` on
a farm of hundreds of nodes. The view keeps the last read for a moment; a
change of nodes through this master (registration, drain, deletion ...)
drops it at once, so a reason is never staler than :data:`NODE_VIEW_S`, and
only for what happened elsewhere: a node going silent, another master's changes.
Waiting long-polls are woken for the jobs their nodes can take as the view has
them (:mod:`.doorbell`). One read at a time: requests arriving during a read
wait for it rather than start their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..models import Node
    from .store import Store

__all__ = ["NODE_VIEW_S", "NodeView"]

# A reason is a hint for the operator; a second of delay is far below a heartbeat.
NODE_VIEW_S = 1.0


class NodeView:
    """The store's nodes, kept for :data:`NODE_VIEW_S` after each read."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._nodes: list[Node] = []
        self._by_id: dict[str, Node] = {}
        self._until = -NODE_VIEW_S
        self._reading = trio.Lock()

    async def nodes(self) -> list[Node]:
        """Every node, read afresh when the last read is older than :data:`NODE_VIEW_S` or was dropped.

        Raises:
            StoreError: the database failed.
        """
        if trio.current_time() >= self._until:
            async with self._reading:
                if trio.current_time() >= self._until:  # not read meanwhile
                    self._nodes = await self._store.list_nodes()
                    self._by_id = {node.id: node for node in self._nodes}
                    self._until = trio.current_time() + NODE_VIEW_S
        return self._nodes

    async def node(self, node_id: str) -> Node | None:
        """The node as :meth:`nodes` has it; None when it is not there (yet)."""
        await self.nodes()
        return self._by_id.get(node_id)

    def changed(self) -> None:
        """A node changed through this master: the next reason reads the nodes afresh."""
        self._until = -NODE_VIEW_S
