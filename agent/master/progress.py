"""Running jobs' progress, kept in memory and written to the store in batches.

An agent reports each running job's progress about once a second; writing
each report would cost the database one transaction per running job per
second. The master checks the lease with a read, keeps the latest report per
job here, and :func:`serve_progress_flush` writes what changed every
:data:`FLUSH_INTERVAL_S` (a transaction per :data:`FLUSH_SLICE` jobs), and :func:`flush_on_exit` once more on shutdown.
Reads of this master merge the reports not yet written (:meth:`ProgressBook.merged`),
so they show the latest value at once; another master on the same database
sees it within one interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from ..models import Job, JobProgress
from . import scheduler
from .metrics import MasterMetrics
from .store import Store, StoreError

__all__ = ["FLUSH_INTERVAL_S", "LeasedProgress", "ProgressBook", "flush_on_exit", "serve_progress_flush"]

log = logging.getLogger("agent.master")

# Often enough that another master (and a lost job's hand-back) sees progress a
# moment later, rarely enough that a thousand running jobs cost one write per interval.
FLUSH_INTERVAL_S = 2.0
# Jobs written per transaction of a flush: a few milliseconds of SQLite's one writer each.
FLUSH_SLICE = 64


@attrs.frozen
class LeasedProgress:
    """A progress report for one lease of a job: a later lease of the same job is not its to change."""

    # Checked as held by the report's node when the report came.
    lease: scheduler.Lease
    report: JobProgress

    @property
    def job_id(self) -> str:
        return self.lease.job_id

    def applied(self, job: Job) -> Job:
        """``job`` with this progress (``scheduler.record_progress``), or unchanged when its lease ended."""
        return scheduler.record_progress(job, self.report) if scheduler.Lease.of(job) == self.lease else job


class ProgressBook:
    """The latest progress of running jobs not yet written to ``store``; updates and writes counted in ``metrics``."""

    def __init__(self, store: Store, metrics: MasterMetrics) -> None:
        self._store = store
        self._metrics = metrics
        self._pending: dict[str, LeasedProgress] = {}
        self._writing: dict[str, LeasedProgress] = {}
        # Flushes take turns, so an older batch never lands after a newer one.
        self._flushing = trio.Lock()

    def record(self, lease: scheduler.Lease, report: JobProgress) -> None:
        """Keep ``report`` for the job of the stored ``lease``.

        Raises:
            Conflict: the job is not leased to ``report.node_id``.
        """
        lease.check_held_by(report.node_id)
        self._metrics.progress_updates.inc()
        self._pending[lease.job_id] = LeasedProgress(lease, report)

    def merged(self, job: Job) -> Job:
        """The stored ``job`` with the progress this master holds for it and has not yet written."""
        held = self._pending.get(job.id) or self._writing.get(job.id)
        return job if held is None else held.applied(job)

    def forget(self, job_id: str) -> None:
        """Drop what is held for a job whose lease ended: its result has the final progress."""
        self._pending.pop(job_id, None)

    async def flush(self, which: Callable[[LeasedProgress], bool] = lambda held: True) -> bool:
        """Write the held reports ``which`` selects, :data:`FLUSH_SLICE` jobs per transaction; whether there were any.

        Raises:
            StoreError: the database failed; the reports are held again, unless newer ones came.
        """
        async with self._flushing:
            batch = {job_id: held for job_id, held in self._pending.items() if which(held)}
            if not batch:
                return False
            for job_id in batch:
                del self._pending[job_id]
            self._writing = batch
            held = list(batch.values())
            try:
                # A transaction per slice: claims and results wait for the one connection between
                # slices, not for every running job's write at once.
                for start in range(0, len(held), FLUSH_SLICE):
                    await self._store.save_progress(held[start : start + FLUSH_SLICE])
                    self._metrics.progress_writes.inc()
            except BaseException:
                self._pending = {**batch, **self._pending}
                raise
            finally:
                self._writing = {}
            return True


async def serve_progress_flush(
    book: ProgressBook,
    interval: float = FLUSH_INTERVAL_S,
) -> None:
    """Write the book every ``interval`` seconds until cancelled.

    A write that fails (the database is away) is logged and tried again next
    round with the latest values.
    """
    while True:
        await trio.sleep(interval)
        try:
            await book.flush()
        except StoreError as exc:
            log.warning("Progress of running jobs not written, kept for the next round: %s", exc)


async def flush_on_exit(book: ProgressBook) -> None:
    """Write what the book holds once more as the master stops, even when cancelled.

    Call it after the routes stopped, so nothing arrives after it; it gets
    :data:`FLUSH_INTERVAL_S`, and a failure is logged (those jobs' progress is
    then the one written last).
    """
    with trio.move_on_after(FLUSH_INTERVAL_S, shield=True):
        try:
            await book.flush()
        except StoreError as exc:
            log.warning("Progress of running jobs not written on shutdown: %s", exc)
