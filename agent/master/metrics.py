"""The master's own Prometheus metrics, served on its ``/metrics``.

They live in a registry of their own: an embedded master and an agent in one
process (``python -m agent local``) must not collide in the global one.
State (jobs, queues, nodes) is read from the store at scrape time, so every
master on a shared PostgreSQL reports the same numbers; counters and
latencies are this process's own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import prometheus_client
from starlette.requests import Request
from starlette.responses import Response

from ..models import JobStatus, Queue
from .store import StoreCounts

__all__ = ["MasterMetrics"]

NODE_STATUSES = ("available", "busy", "draining", "offline")
CLAIM_OUTCOMES = ("leased", "empty", "unknown_node")
# What a result did to its job: its final status, another try, or nothing (rejected: not its lease).
RESULT_OUTCOMES = (*(status.value for status in JobStatus if status.is_final), "retrying", "rejected")
# From a claim on an idle SQLite store (1 ms) to a loaded database (seconds);
# a long-poll's time includes the wait it asked for, up to 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MasterMetrics:
    def __init__(self) -> None:
        self.registry = registry = prometheus_client.CollectorRegistry()
        self.jobs = prometheus_client.Gauge(
            "ffrtmp_master_jobs", "Jobs in the store by status.", ["status"], registry=registry
        )
        self.queue_depth = prometheus_client.Gauge(
            "ffrtmp_master_queue_depth", "Pending jobs by queue.", ["queue"], registry=registry
        )
        self.nodes = prometheus_client.Gauge(
            "ffrtmp_master_nodes", "Registered nodes by status.", ["status"], registry=registry
        )
        self.event_connections = prometheus_client.Gauge(
            "ffrtmp_master_event_connections", "Open websocket event channels.", registry=registry
        )
        self.claims = prometheus_client.Counter(
            "ffrtmp_master_claims",
            "Claims (GET /jobs/next) by outcome: leased, empty, or unknown_node.",
            ["outcome"],
            registry=registry,
        )
        self.results = prometheus_client.Counter(
            "ffrtmp_master_results",
            "Worker results by what they did to the job (completed, retrying, rejected ...).",
            ["outcome"],
            registry=registry,
        )
        self.expired = prometheus_client.Counter(
            "ffrtmp_master_jobs_timed_out",
            "Jobs the master failed for passing their timeout without a result.",
            registry=registry,
        )
        self.cleaned = prometheus_client.Counter(
            "ffrtmp_master_jobs_cleaned",
            "Finished jobs deleted after the retention period.",
            registry=registry,
        )
        self.progress_updates = prometheus_client.Counter(
            "ffrtmp_master_progress_updates",
            "Progress reports accepted (POST /jobs/{id}/progress); kept in memory, not written one by one.",
            registry=registry,
        )
        self.progress_writes = prometheus_client.Counter(
            "ffrtmp_master_progress_writes",
            "Write transactions that stored the progress of running jobs, each for all the jobs it changed.",
            registry=registry,
        )
        self.artifact_bytes_received = prometheus_client.Counter(
            "ffrtmp_master_artifact_bytes_received",
            "Bytes of artifact uploads written to the store (a resumed upload counts only what it sent).",
            registry=registry,
        )
        self.latency = prometheus_client.Histogram(
            "ffrtmp_master_request_seconds",
            "Time to answer an API request, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Outcomes read 0 until they happen, so that rates and alert rules on them have a series.
        for outcome in CLAIM_OUTCOMES:
            self.claims.labels(outcome)
        for outcome in RESULT_OUTCOMES:
            self.results.labels(outcome)

    def timed(
        self, method: str, route: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` observed in :attr:`latency` under its route template, errors included."""
        observed = self.latency.labels(method, route)

        async def timed_endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                return await endpoint(request)
            finally:
                observed.observe(time.perf_counter() - started)

        return timed_endpoint

    def record_counts(self, counts: StoreCounts, event_connections: int) -> None:
        """Set the gauges from the store's counts; statuses with no jobs show 0, not nothing."""
        for status in JobStatus:
            self.jobs.labels(status.value).set(counts.jobs.get(status.value, 0))
        for queue in Queue:
            self.queue_depth.labels(queue.value).set(counts.pending_by_queue.get(queue.value, 0))
        for node_status in {*NODE_STATUSES, *counts.nodes}:
            self.nodes.labels(node_status).set(counts.nodes.get(node_status, 0))
        self.event_connections.set(event_connections)

    def exposition(self) -> bytes:
        return prometheus_client.generate_latest(self.registry)
