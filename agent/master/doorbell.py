"""Waking the long-polls that wait for a job: one per job that became pending.

A long-poll (``GET /jobs/next?wait=N``) that found nothing to claim waits
here. Waking every waiter for every new job made each job cost a claim per
waiting long-poll: a farm of idle slots fed one job at a time spent its
master on claims that found nothing, and fell behind for good (see "Cost
per request" in docs/architecture.rst). So a job wakes one waiter: the one
waiting longest whose node can take it (not drained, with the hardware
codec the job names), as this master last saw the node.

A waiter woken for a job that another claim took first claims nothing and
waits again: the job went to someone. One woken while its own claim was
under way, which then leaves with another job (or at its deadline), passes
the wake on (:meth:`Doorbell.leave`), so no job is left pending while a
waiter that could take it sleeps.

What frees work without saying which (an undrained node, another master's
announcement of a count, a lost notification channel) wakes by count or
everyone (:meth:`Doorbell.ring_count`, :meth:`Doorbell.ring_all`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import attrs
import trio

from ..models import Job, Node
from . import scheduler

__all__ = ["Doorbell", "Waiter"]


@attrs.define(eq=False)
class Waiter:
    """One long-poll waiting; ``node`` None when its node was not known, so it takes any job."""

    node: Node | None
    woken: trio.Event = attrs.field(factory=trio.Event)
    # The job it was woken for; None when woken by count or for everyone.
    woken_for: Job | None = None

    def takes(self, job: Job) -> bool:
        return self.node is None or bool(scheduler.runnable([job], self.node))


class Doorbell:
    """The waiting long-polls, longest-waiting first, and the rings that wake them."""

    def __init__(self) -> None:
        self._waiting: dict[Waiter, None] = {}  # in order of arrival
        self._rung = trio.Event()

    @property
    def rung(self) -> trio.Event:
        """Set by the next ring of any kind: the push channel tells the nodes that do not long-poll then."""
        return self._rung

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self, node: Node | None) -> Waiter:
        """Queue a waiter; enter before the claim, so a job queued meanwhile still wakes it."""
        waiter = Waiter(node)
        self._waiting[waiter] = None
        return waiter

    def leave(self, waiter: Waiter, *, used: bool = False) -> None:
        """Take ``waiter`` off the queue; a wake it got and no claim followed (``used``) goes to the next one."""
        self._waiting.pop(waiter, None)
        if waiter.woken.is_set() and not used:
            if waiter.woken_for is not None:
                self.ring([waiter.woken_for])
            else:
                self.ring_count(1)

    def ring(self, jobs: Iterable[Job]) -> None:
        """For each of ``jobs``, now pending, wake the longest-waiting waiter that can take it."""
        rung = False
        for job in jobs:
            rung = True
            taker = next((waiter for waiter in self._waiting if waiter.takes(job)), None)
            if taker is not None:
                self._wake(taker, job)
        if rung:
            self._ring()

    def ring_count(self, count: int) -> None:
        """Wake the ``count`` longest-waiting waiters whose nodes take new jobs (which jobs is not known)."""
        takers = (waiter for waiter in self._waiting if waiter.node is None or scheduler.takes_new_jobs(waiter.node))
        for waiter in list(itertools.islice(takers, count)):
            self._wake(waiter, None)
        self._ring()

    def ring_all(self) -> None:
        """Wake every waiter: a node may take what it could not (an undrain), or news may have been missed."""
        for waiter in list(self._waiting):
            self._wake(waiter, None)
        self._ring()

    def _wake(self, waiter: Waiter, job: Job | None) -> None:
        del self._waiting[waiter]
        waiter.woken_for = job
        waiter.woken.set()

    def _ring(self) -> None:
        self._rung.set()
        self._rung = trio.Event()
