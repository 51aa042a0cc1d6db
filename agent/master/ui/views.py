"""What the dashboard's pages show, worked out from wire types: plain code that tests call.

Job columns are the CLI's (:mod:`agent.console`): the same status, pace and
outcome words appear in ``ffrtmp jobs list`` and on the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

import attrs

from ...console import delivered_outputs, is_prefetched, outcome_shown, pace_shown, status_shown
from ...models import Job, JobStatus, Node
from ..store import StoreCounts
from .feed import ProgressPoint

__all__ = ["FarmTotals", "JobView", "NodeView", "Sparkline", "ago", "prefetched_ids"]

# The progress chart's drawing area, in SVG user units; the page scales it to its width.
CHART_WIDTH = 600
CHART_HEIGHT = 120


def ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    """``12 s ago``, ``3 min ago``, ``5 h ago``, ``2 d ago``; ``never`` for no moment."""
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@attrs.frozen
class JobView:
    """One job as a row or a page shows it."""

    job: Job
    status: str
    fps: str
    speed: str
    eta: str
    outcome: str
    # (file name, SHA-256) of each output delivered to the master, for download links.
    outputs: list[tuple[str, str]]

    @classmethod
    def of(cls, job: Job) -> JobView:
        fps, speed, eta = pace_shown(job)
        return cls(job, status_shown(job), fps, speed, eta, outcome_shown(job), delivered_outputs(job))

    @property
    def actions(self) -> list[str]:
        """The operator actions the job's status allows (the scheduler's rules), in button order."""
        status = self.job.status
        allowed = []
        if status in (JobStatus.PENDING, JobStatus.PROCESSING):
            allowed.append("pause")
        if status is JobStatus.PAUSED:
            allowed.append("resume")
        if status in (JobStatus.FAILED, JobStatus.CANCELED):
            allowed.append("retry")
        if not status.is_final:
            allowed.append("cancel")
        return allowed


def prefetched_ids(running: Sequence[Job]) -> set[str]:
    """The ids of the running jobs that wait on their node for a slot (its agent said so after a second)."""
    return {job.id for job in running if is_prefetched(job)}


def _slots_used(node: Node, prefetched: Collection[str]) -> int:
    return sum(job_id not in prefetched for job_id in node.active_job_ids)


@attrs.frozen
class NodeView:
    """One node as the nodes table shows it: slots used by running encoders, prefetched jobs apart."""

    node: Node
    slots_used: int
    prefetched: int
    engines: str
    hardware: str
    # From the node's last heartbeat to this master; None before the first.
    cpu_load: float | None
    last_seen: str

    @classmethod
    def of(cls, node: Node, cpu_load: float | None, now: dt.datetime, prefetched: Collection[str]) -> NodeView:
        ram = f", {node.ram_total_bytes / 2**30:.0f} GiB" if node.ram_total_bytes else ""
        cpu = f"{node.cpu_threads} threads{ram}"
        hardware = ", ".join([*node.gpu_capabilities, cpu])
        used = _slots_used(node, prefetched)
        return cls(
            node=node,
            slots_used=used,
            prefetched=len(node.active_job_ids) - used,
            engines=node.labels.get("engines", "") or "-",
            hardware=hardware,
            cpu_load=cpu_load,
            last_seen=ago(node.last_heartbeat, now),
        )

    @property
    def online(self) -> bool:
        return self.node.status != "offline"


@attrs.frozen
class FarmTotals:
    """The farm at a glance: queue depth, work in hand, throughput and bandwidth."""

    pending_by_queue: dict[str, int]
    jobs: dict[str, int]
    nodes_online: int
    nodes: int
    slots_used: int
    slots: int
    prefetched: int
    completed_recently: int
    fps: float
    # Bytes per second the running encoders write, in megabits: each job's bitrate times its speed.
    output_mbps: float

    @property
    def pending(self) -> int:
        return sum(self.pending_by_queue.values())

    @classmethod
    def of(
        cls, counts: StoreCounts, nodes: Sequence[Node], running: Sequence[Job], completed_recently: int
    ) -> FarmTotals:
        online = [node for node in nodes if node.status != "offline"]
        lives = [job.live for job in running if job.live is not None]
        prefetched = prefetched_ids(running)
        slots_used = sum(_slots_used(node, prefetched) for node in online)
        return cls(
            pending_by_queue=counts.pending_by_queue,
            jobs=counts.jobs,
            nodes_online=len(online),
            nodes=len(nodes),
            slots_used=slots_used,
            slots=sum(node.max_concurrent_jobs for node in online),
            prefetched=sum(len(node.active_job_ids) for node in online) - slots_used,
            completed_recently=completed_recently,
            fps=sum(live.fps for live in lives),
            output_mbps=sum(live.bitrate_kbps * live.speed for live in lives) / 1000,
        )


@attrs.frozen
class Sparkline:
    """A job's progress history as SVG polylines: percent done, and fps scaled to the busiest moment."""

    percent: str
    fps: str
    max_fps: float
    seconds: float

    @classmethod
    def of(cls, points: Sequence[ProgressPoint]) -> Sparkline | None:
        """None for fewer than two points: nothing to draw."""
        if len(points) < 2:
            return None
        start, span = points[0].at, max(points[-1].at - points[0].at, 1e-6)
        max_fps = max(point.fps for point in points) or 1.0

        def line(values: Sequence[float], top: float) -> str:
            return " ".join(
                f"{(point.at - start) / span * CHART_WIDTH:.1f},{CHART_HEIGHT - value / top * CHART_HEIGHT:.1f}"
                for point, value in zip(points, values)
            )

        return cls(
            percent=line([min(100.0, point.percent) for point in points], 100.0),
            fps=line([point.fps for point in points], max_fps),
            max_fps=max_fps,
            seconds=span,
        )
