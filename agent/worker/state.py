"""What the agent is doing right now, for heartbeats, ``/ready`` and ``/jobs``."""

from __future__ import annotations

import attrs

from agent.worker.jobs import RunningJob


@attrs.define
class AgentState:
    node_id: str = ""
    draining: bool = False
    breaker_open: bool = False
    # The jobs between claim and result, kept by :class:`~agent.worker.jobs.JobTasks`.
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
