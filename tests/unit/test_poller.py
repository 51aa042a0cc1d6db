"""The claim loop against a fake master, on a mock clock: when it claims again."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from agent.models import Job
from agent.worker.breaker import CircuitBreaker
from agent.worker.jobs import LAUNCH_WAIT_S, JobTasks
from agent.worker.metrics import AgentMetrics
from agent.worker.poller import Poller
from agent.worker.state import AgentState
from tests.unit.test_jobs import FakeMaster, FakeRunner, Sink, job

pytestmark = pytest.mark.timeout(10)


@attrs.define
class QueueMaster:
    """Hands out ``jobs`` in turn, then long-polls until the deadline; notes when each claim came."""

    jobs: list[Job]
    claims: list[float] = attrs.field(factory=list)

    async def claim_next(self, node_id: str, *, wait: float = 0.0) -> Job | None:
        self.claims.append(trio.current_time())
        if self.jobs:
            return self.jobs.pop(0)
        await trio.sleep(wait)
        return None


async def claims_with_launch_after(launch_s: float) -> list[float]:
    """When the poller sent its first claims, 4 slots free, two jobs queued, each encoder running ``launch_s`` in."""
    master = QueueMaster([job("a", seconds=60), job("b", seconds=60)])
    breaker = CircuitBreaker()
    jobs = JobTasks(runner=FakeRunner(launch_s=launch_s), client=FakeMaster(), reporter=Sink(), breaker=breaker,
                    metrics=AgentMetrics.create())

    async def reregister() -> None:
        raise AssertionError("the fake master knows the node")

    poller = Poller(client=master, jobs=jobs, breaker=breaker, state=AgentState(node_id="node-1"),  # type: ignore[arg-type]
                    limiter=trio.CapacityLimiter(4), poll_interval=2.0, reregister=reregister)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poller.poll, nursery)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return master.claims[:3]


async def test_the_next_claim_waits_for_the_claimed_jobs_encoder_to_run(autojump_clock: trio.testing.MockClock) -> None:
    """A process starts in a worker thread that needs the event loop idle: no claim is sent meanwhile."""
    assert await claims_with_launch_after(0.01) == pytest.approx([0.0, 0.01, 0.02])


async def test_a_slow_start_holds_the_next_claim_only_briefly(autojump_clock: trio.testing.MockClock) -> None:
    """An input to fetch or generate first: the next claim goes after LAUNCH_WAIT_S, not after the fetch."""
    assert await claims_with_launch_after(30) == pytest.approx([0.0, LAUNCH_WAIT_S, 2 * LAUNCH_WAIT_S])
