"""A model of the original Go agent's claim loop, for comparison: one claim per poll tick.

The Go agent ran a ticker: on each tick, if fewer than
``--max-concurrent-jobs`` jobs were running, it asked the master for one job
and started it in a goroutine. So filling N free slots took N ticks, and a
slot freed just after a tick stayed empty until the next one. This class
does the same against our master, with the same encoder, so the bench can
show the difference on one workload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn

import attrs
import trio

from agent.client import MasterClient
from agent.models import Job, JobResult, JobStatus

__all__ = ["GoLoop"]


@attrs.define
class GoLoop:
    """One claim per tick of ``poll_interval``, at most ``max_concurrent_jobs`` running.

    Args:
        client: the master.
        node_id: the node the model registered as.
        max_concurrent_jobs: the Go agent's flag of that name.
        poll_interval: the Go agent's ``--poll-interval`` (its default was 10 s).
        encode: runs one job's encoder to its end.
    """

    client: MasterClient
    node_id: str
    max_concurrent_jobs: int
    poll_interval: float
    encode: Callable[[Job], Awaitable[None]]
    active: int = 0

    async def run(self, job_nursery: trio.Nursery) -> NoReturn:
        """Claim on every tick until cancelled; jobs run in ``job_nursery``."""
        tick = trio.current_time()
        while True:
            if self.active < self.max_concurrent_jobs:
                job = await self.client.claim_next(self.node_id)
                if job is not None:
                    self.active += 1
                    job_nursery.start_soon(self._execute, job)
            # A ticker keeps its period whatever the claim cost.
            tick += self.poll_interval
            await trio.sleep_until(tick)

    async def _execute(self, job: Job) -> None:
        # The slot is free once the result is sent, as in the Go agent's goroutine.
        try:
            await self.encode(job)
            await self.client.send_result(
                JobResult(job_id=job.id, node_id=self.node_id, status=JobStatus.COMPLETED, progress=100.0)
            )
        finally:
            self.active -= 1
