"""What the agent is doing right now: shared by the poller, the job tasks and /ready."""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

from agent.models import Job
from agent.worker.progress import ProgressSnapshot


@attrs.define
class RunningJob:
    """A job between claim and result, with the scope that stops it."""

    job: Job
    scope: trio.CancelScope
    started_monotonic: float = attrs.field(factory=time.monotonic)
    progress: float = 0.0
    last_snapshot: ProgressSnapshot | None = None
    # Why the scope was cancelled from outside: "canceled" (master) or "" (shutdown).
    stop_reason: str = ""

    def update_progress(self, percent: float, snapshot: ProgressSnapshot) -> None:
        self.progress = percent
        self.last_snapshot = snapshot

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "scenario": self.job.scenario,
            "progress": round(self.progress, 1),
            "running_s": round(time.monotonic() - self.started_monotonic, 1),
        }


@attrs.define
class AgentState:
    node_id: str = ""
    draining: bool = False
    breaker_open: bool = False
    running: dict[str, RunningJob] = attrs.field(factory=dict)

    def not_ready_reasons(self) -> list[str]:
        """Empty when the agent should be sent work; otherwise why not."""
        reasons = []
        if not self.node_id:
            reasons.append("not registered with the master yet")
        if self.draining:
            reasons.append("draining for shutdown")
        if self.breaker_open:
            reasons.append("circuit breaker open after repeated failures")
        return reasons
