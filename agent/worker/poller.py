"""The claim loop: a slot, then a claim, then the job's task, while the breaker allows.

The poller takes a slot of the ``CapacityLimiter`` *before* it claims, so it
never holds a job it has no room for, and it goes back for the next slot as
soon as the claimed job's encoder runs (:data:`LAUNCH_WAIT_S` at most; a claim
sent while a process starts would delay it): a queue of N jobs fills N free
slots in N round trips, not N poll intervals. It sleeps only when the master
has no work, or while the circuit breaker is open. Prefetch claims wait for
launches too: a prefetched job taking a freed slot starts before the next
claim is sent.

With ``--prefetch N`` it also claims while every slot is busy, up to N jobs
and only for a running encode expected to end within :data:`PREFETCH_LEAD_S`:
the prefetched job waits in its task for the slot, so the next encoder starts
as soon as one ends instead of a claim's round trip later (what Celery's
prefetch buys). Before its first progress report an encode counts as ending
soon only if it asks for a few seconds of media, so no job is queued behind a
long one.

A job task holds its slot from claim (or, prefetched, from the slot's turn)
until its result is made; what happens in it is :mod:`agent.worker.jobs`
driving :mod:`agent.worker.lifecycle`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Awaitable, Callable, NoReturn

import attrs
import trio

from agent.client import MasterClient, MasterError, MasterUnavailable, UnknownToMaster
from agent.models import Job
from agent.worker.backoff import Backoff
from agent.worker.breaker import BreakerState, CircuitBreaker
from agent.worker.jobs import LAUNCH_WAIT_S, JobTasks, Slot
from agent.worker.state import AgentState

log = logging.getLogger(__name__)

# Longest long-poll. A claim in flight is finished even during a drain (the
# master may lease a job to it), so this also bounds how long an idle agent's
# drain can wait for one.
LONG_POLL_MAX_S = 5.0
# A prefetch is claimed only for an encode expected to end this soon: a little
# more than a claim's round trip, so the next job is there in time, without
# holding it from other agents for long.
PREFETCH_LEAD_S = 1.0
# While every slot is busy, how often the poller looks again at whether one ends soon
# (at once when a job ends or a prefetched one starts).
PREFETCH_CHECK_S = 0.1


@attrs.define
class Poller:
    client: MasterClient
    jobs: JobTasks
    breaker: CircuitBreaker
    state: AgentState
    limiter: trio.CapacityLimiter
    poll_interval: float
    reregister: Callable[[], Awaitable[None]]
    # Jobs claimed beyond the free slots, waiting for one (--prefetch); 0: a slot before every claim.
    prefetch: int = 0
    backoff: Backoff = attrs.field(factory=Backoff)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _long_poll_supported: bool = True
    _master_failing: bool = False
    _said_full: bool = False

    @property
    def limit(self) -> int:
        """Jobs at once now: --max-concurrent-jobs, or what --adaptive set since."""
        return int(self.limiter.total_tokens)

    def wake(self) -> None:
        """Cut short an idle wait: the master says work is waiting."""
        self._wake.set()

    async def poll(self, job_nursery: trio.Nursery) -> NoReturn:
        log.info("Starting job polling loop (max concurrent jobs: %d)...", self.limit)
        while True:
            full = self.limiter.available_tokens == 0
            if full and not self._said_full:
                # Logged once each time the slots fill up, not on every wait (nor every prefetch).
                log.info("At max concurrent jobs (%d/%d), waiting...", self.limit, self.limit)
            self._said_full = full
            prefetch = await self._wait_for_room()
            with trio.move_on_after(LAUNCH_WAIT_S):
                await self.jobs.until_launched()
            try:
                job = await job_nursery.start(partial(self._job_slot, prefetch=prefetch))
            except MasterUnavailable as exc:
                self.breaker.claim_failed(trio.current_time(), str(exc))
                await self._back_off(exc)
                continue
            except UnknownToMaster:
                log.warning("The master no longer knows node %s; registering again", self.state.node_id)
                await self.reregister()
                continue
            self.breaker.claim_succeeded(got_job=job is not None)
            if self._master_failing:
                log.info("The master at %s answers again", self.client.base_url)
                self._master_failing = False
            self.backoff.reset()
            if job is None and not self._long_poll_supported:
                await self._wait_for_work()

    async def _back_off(self, exc: MasterError) -> None:
        delay = self.backoff.next()
        if not self._master_failing:
            log.warning("%s; retrying with backoff", exc)
            self._master_failing = True
        else:
            log.debug("%s; polling again in %.1fs", exc, delay)
        await trio.sleep(delay)

    async def _wait_for_work(self) -> None:
        self._wake = trio.Event()
        with trio.move_on_after(self.poll_interval):
            await self._wake.wait()

    async def _wait_for_room(self) -> bool:
        """Until a slot is free (False) or a prefetch is due (True); at once without ``--prefetch``.

        Without it, :meth:`_job_slot` waits for the slot itself, as it always has.
        """
        if self.prefetch == 0:
            return False
        while self.limiter.available_tokens == 0:
            # No job is claimed ahead by a node whose last job failed: it may be the node's fault.
            healthy = self.breaker.state is BreakerState.CLOSED and self.breaker.job_failures == 0
            due = min(self.prefetch, self.jobs.ending_within(PREFETCH_LEAD_S)) if healthy else 0
            if self.jobs.prefetched < due:
                return True
            with trio.move_on_after(PREFETCH_CHECK_S):
                await self.jobs.busy_changed.wait()
        return False

    async def _wait_for_breaker(self) -> None:
        while (delay := self.breaker.claim_delay(trio.current_time())) > 0:
            with trio.move_on_after(delay):
                await self.jobs.job_ended.wait()  # a probe job's end decides sooner

    async def _job_slot(
        self, *, prefetch: bool = False, task_status: trio.TaskStatus[Job | None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """A slot (or, prefetching, none yet), a claim, and the claimed job's whole life."""
        slot = Slot(self.limiter) if prefetch else await Slot.taken(self.limiter)
        try:
            await self._wait_for_breaker()
            self.breaker.claim_started()
            # A claim in flight when the drain starts is finished, never dropped:
            # the master has leased the job to us, so we must answer for it.
            with trio.CancelScope(shield=True):
                job = await self._claim()
            task_status.started(job)
            if job is not None:
                await self.jobs.run(job, self.state.node_id, draining=self.state.draining, slot=slot)
        finally:
            slot.release()

    async def _claim(self) -> Job | None:
        """Claim, long-polling while the master supports it (it holds the request until work comes)."""
        wait = min(self.poll_interval, LONG_POLL_MAX_S) if self._long_poll_supported else 0.0
        started = trio.current_time()
        job = await self.client.claim_next(self.state.node_id, wait=wait)
        # A master with long-poll answers "no job" only at the deadline; the
        # original Go master ignores ``wait`` and answers at once.
        if job is None and wait > 0 and trio.current_time() - started < wait / 2:
            log.info(
                "The master does not hold long-polls; falling back to plain polling every %gs",
                self.poll_interval,
            )
            self._long_poll_supported = False
        return job
