"""The agent's Prometheus metrics.

Each agent owns a registry of its own rather than prometheus-client's global
one, so that the one-process mode (and tests) can run a master and an agent, or
several agents, in one interpreter without duplicate-metric errors.
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Encodes last from a second (tests, stubs) to hours (long live streams).
JOB_DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


@attrs.define
class AgentMetrics:
    registry: CollectorRegistry
    active_jobs: Gauge
    max_concurrent_jobs: Gauge
    jobs_finished: Counter
    job_duration: Histogram
    input_bytes: Counter
    output_bytes: Counter
    breaker_state: Gauge
    engine_available: Gauge
    hw_encoder_available: Gauge
    adaptive_throughput: Gauge

    def report_capabilities(self, engines: dict[str, bool], hw_encoders: dict[str, bool]) -> None:
        """Publish what start-up detection found; absent ones read 0 rather than missing."""
        for engine, present in engines.items():
            self.engine_available.labels(engine).set(int(present))
        for encoder, present in hw_encoders.items():
            self.hw_encoder_available.labels(encoder).set(int(present))

    @classmethod
    def create(cls) -> AgentMetrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            # Unlabelled, as the original agent exported it: dashboards query it by name.
            active_jobs=Gauge(
                "ffrtmp_active_jobs", "Jobs running on this agent now", registry=registry
            ),
            max_concurrent_jobs=Gauge(
                "ffrtmp_max_concurrent_jobs", "Jobs this agent may run at once", registry=registry
            ),
            jobs_finished=Counter(
                "ffrtmp_jobs_finished",
                "Jobs this agent finished, by result status and failure reason",
                ["status", "reason"],
                registry=registry,
            ),
            job_duration=Histogram(
                "ffrtmp_job_duration_seconds",
                "Wall time of a job from claim to result",
                buckets=JOB_DURATION_BUCKETS,
                registry=registry,
            ),
            input_bytes=Counter(
                "ffrtmp_input_bytes", "Bytes of input the encoders read", registry=registry
            ),
            output_bytes=Counter(
                "ffrtmp_output_bytes", "Bytes of output the encoders wrote", registry=registry
            ),
            breaker_state=Gauge(
                "ffrtmp_circuit_breaker_state",
                "Circuit breaker: 0 closed (claiming), 1 open (paused), 2 half-open (one probe job)",
                registry=registry,
            ),
            engine_available=Gauge(
                "ffrtmp_engine_available",
                "1 if this agent can run jobs with the engine, detected at start",
                ["engine"],
                registry=registry,
            ),
            hw_encoder_available=Gauge(
                "ffrtmp_hw_encoder_available",
                "1 if the hardware encoder passed a one-frame test encode at start",
                ["encoder"],
                registry=registry,
            ),
            adaptive_throughput=Gauge(
                "ffrtmp_adaptive_throughput_megapixels_per_second",
                "Pixels the encoders produced per second in the last --adaptive window",
                registry=registry,
            ),
        )
