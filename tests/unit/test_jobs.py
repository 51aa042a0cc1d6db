"""The trio drivers of a job's life, in process on a mock clock: no OS process, no socket.

The fakes stand in for what is outside the driver: an encode runner that
"encodes" one progress block per simulated second, a master that records
progress and can refuse it, and a result sink. The clock jumps whenever every
task waits (``autojump_clock``), so simulated minutes take milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from agent.client import MasterUnavailable, StateConflict, UnknownToMaster
from agent.models import FailureReason, Job, JobProgress, JobResult, JobStatus, ResultAck
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.breaker import BreakerState, CircuitBreaker
from agent.worker.identity import NodeTokens
from agent.worker.jobs import STATUS_POLL_INTERVAL_S, JobTasks, Slot
from agent.worker.lifecycle import EncodeOutcome, StopReason
from agent.worker.metrics import AgentMetrics
from agent.worker.progress import ProgressSnapshot
from agent.worker.reporter import DELIVERY_ATTEMPT_S, Outbox, ResultReporter

pytestmark = pytest.mark.timeout(10)


def job(job_id: str = "j1", seconds: float = 5, **params: Any) -> Job:
    return Job(id=job_id, scenario="144p30-h264", parameters={"duration": seconds, **params})


@attrs.define
class FakeRunner:
    """Encodes one progress block per second of the job's duration; ``failure`` makes the encode fail."""

    failure: FailureReason | None = None
    started: list[str] = attrs.field(factory=list)
    # Seconds from the start of the run to the encoder's launch (its process running).
    launch_s: float = 0.0

    def prepare(self, job: Job) -> EncodeSpec:
        return build_spec(job)

    async def run(
        self, job: Job, spec: EncodeSpec, on_progress: Any, stop: trio.CancelScope, on_launch: Callable[[], None]
    ) -> EncodeOutcome:
        self.started.append(job.id)
        with stop:
            await trio.sleep(self.launch_s)
            on_launch()
            for second in range(1, int(spec.duration) + 1):
                await trio.sleep(1)
                on_progress(100.0 * second / spec.duration, ProgressSnapshot(frame=30 * second, out_time_s=second))
            if self.failure is not None:
                return EncodeOutcome.failed(self.failure, "the encoder crashed")
            return EncodeOutcome(metrics={"frames": 30 * int(spec.duration)})
        return EncodeOutcome(stopped=True)


@attrs.define
class FakeMaster:
    """The master's side of progress and status; ``refuse`` answers progress with 409, ``status`` with 404."""

    progress: list[tuple[float, str, float]] = attrs.field(factory=list)
    refuse: bool = False
    no_progress_route: bool = False
    status: JobStatus = JobStatus.PROCESSING
    results: list[JobResult] = attrs.field(factory=list)
    reachable: bool = True
    node_id: str = "node-1"

    async def send_progress(self, job_id: str, progress: JobProgress) -> None:
        if self.no_progress_route:
            raise UnknownToMaster("POST /jobs/x/progress: 404 page not found")
        if self.refuse:
            raise StateConflict(f"job {job_id} is not leased to node {progress.node_id}")
        self.progress.append((trio.current_time(), job_id, progress.progress))

    async def get_job(self, job_id: str) -> Job:
        return attrs.evolve(job(job_id), status=self.status)

    async def send_result(self, result: JobResult, *, token: str = "") -> ResultAck:
        if not self.reachable:
            raise MasterUnavailable("cannot reach the master")
        self.results.append(result)
        return ResultAck(status="success")


@attrs.define
class Sink:
    results: list[tuple[float, JobResult]] = attrs.field(factory=list)

    async def deliver(self, result: JobResult) -> None:
        self.results.append((trio.current_time(), result))


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read afresh (a call moves it; a plain attribute read would be narrowed)."""
    return breaker.state


def tasks(master: FakeMaster | None = None, runner: FakeRunner | None = None,
          breaker: CircuitBreaker | None = None) -> tuple[JobTasks, Sink]:
    sink = Sink()
    driver = JobTasks(
        runner=runner or FakeRunner(), client=master or FakeMaster(), reporter=sink,
        breaker=breaker or CircuitBreaker(threshold=2), metrics=AgentMetrics.create(),
    )
    return driver, sink


async def test_a_job_runs_from_claim_to_result_with_progress_once_a_second(autojump_clock: trio.testing.MockClock) -> None:
    """Progress reaches the master once per simulated second; the result comes after the last and the job has left."""
    master = FakeMaster()
    driver, sink = tasks(master)
    await driver.run(job(seconds=5), "node-1", draining=False)
    [(delivered_at, result)] = sink.results
    assert (result.status, result.progress, result.metrics) == (JobStatus.COMPLETED, 100.0, {"frames": 150})
    assert [round(at) for at, _, _ in master.progress] == [1, 2, 3, 4, 5]
    assert [percent for _, _, percent in master.progress] == [20.0, 40.0, 60.0, 80.0, 100.0]
    assert delivered_at == pytest.approx(5.0) and driver.running == {}


async def test_a_stop_from_the_master_ends_the_job_canceled(autojump_clock: trio.testing.MockClock) -> None:
    """A pushed cancel (or a heartbeat reply) is JobTasks.stop: the encode stops at once and the result says why."""
    driver, sink = tasks()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: driver.run(job(seconds=60), "node-1", draining=False))
        await trio.sleep(2.5)
        driver.stop("j1", StopReason.CANCELED)
    [(at, result)] = sink.results
    assert (result.status, result.error) == (JobStatus.CANCELED, "canceled on the master")
    assert result.progress == pytest.approx(100 / 30)
    assert at == pytest.approx(2.5)


async def test_a_refused_progress_update_stops_the_job_as_no_longer_ours(autojump_clock: trio.testing.MockClock) -> None:
    """409 on progress: the lease is gone; the encoder stops after its first update."""
    driver, sink = tasks(FakeMaster(refuse=True))
    await driver.run(job(seconds=60), "node-1", draining=False)
    [(at, result)] = sink.results
    assert (result.status, result.error) == (JobStatus.CANCELED, "no longer leased to this node on the master")
    assert at == pytest.approx(1.0)


async def test_without_a_progress_route_the_status_poll_stops_a_paused_job(autojump_clock: trio.testing.MockClock) -> None:
    """Against the Go master (404 on progress) the job's status is read every few seconds instead."""
    master = FakeMaster(no_progress_route=True, status=JobStatus.PAUSED)
    driver, sink = tasks(master)
    await driver.run(job(seconds=60), "node-1", draining=False)
    [(at, result)] = sink.results
    assert (result.status, result.error) == (JobStatus.CANCELED, "paused on the master")
    assert not driver.progress_supported
    assert at == pytest.approx(1.0 + STATUS_POLL_INTERVAL_S)


async def test_a_shutdown_stop_and_an_outside_cancel_both_report_a_worker_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """stop_all(SHUTDOWN) after a grace, or the job task cancelled outright: a retryable platform failure."""
    driver, sink = tasks()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: driver.run(job("a", seconds=60), "node-1", draining=False))
        nursery.start_soon(lambda: driver.run(job("b", seconds=60), "node-1", draining=False))
        await trio.sleep(3)
        driver.stop_all(StopReason.SHUTDOWN)
    with trio.move_on_after(2):
        await driver.run(job("c", seconds=60), "node-1", draining=False)
    assert sorted((r.job_id, r.failure_reason, r.error) for _, r in sink.results) == [
        ("a", "platform_error", "worker shutdown"), ("b", "platform_error", "worker shutdown"),
        ("c", "platform_error", "worker shutdown"),
    ]


async def test_a_job_claimed_while_draining_is_handed_back_without_starting(autojump_clock: trio.testing.MockClock) -> None:
    runner = FakeRunner()
    driver, sink = tasks(runner=runner)
    await driver.run(job(), "node-1", draining=True)
    [(_, result)] = sink.results
    assert (result.not_started, result.error, runner.started) == (True, "not started: worker draining", [])


async def test_a_bad_job_is_rejected_at_claim_without_starting(autojump_clock: trio.testing.MockClock) -> None:
    runner = FakeRunner()
    driver, sink = tasks(runner=runner)
    await driver.run(job(codec="av2"), "node-1", draining=False)
    [(_, result)] = sink.results
    assert (result.failure_reason, runner.started) == ("user_error", [])


async def test_the_breaker_learns_from_jobs_that_end_by_themselves_only(autojump_clock: trio.testing.MockClock) -> None:
    """Two crashes open it; a half-open breaker's probe job that completes closes it; a canceled job says nothing."""
    breaker = CircuitBreaker(threshold=2, cooldown=10)
    crashing = FakeRunner(failure=FailureReason.RUNTIME_ERROR)
    driver, _ = tasks(runner=crashing, breaker=breaker)
    for name in ("a", "b"):
        await driver.run(job(name, seconds=1), "node-1", draining=False)
    assert breaker.state is BreakerState.OPEN
    await trio.sleep(10)
    assert breaker.claim_delay(trio.current_time()) == 0
    assert state(breaker) is BreakerState.HALF_OPEN
    breaker.claim_started()
    healthy, _ = tasks(breaker=breaker)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: healthy.run(job("canceled", seconds=60), "node-1", draining=False))
        await trio.sleep(1.5)
        healthy.stop("canceled", StopReason.CANCELED)
    assert state(breaker) is BreakerState.HALF_OPEN, "a canceled probe proves nothing"
    await healthy.run(job("probe", seconds=2), "node-1", draining=False)
    assert state(breaker) is BreakerState.CLOSED


async def test_a_result_the_master_cannot_take_goes_to_the_outbox_and_out_when_it_answers(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Delivery tries for its patience, the outbox keeps the result, and delivers it once the master is back."""
    master = FakeMaster(reachable=False)
    reporter = ResultReporter(master, Outbox(tmp_path / "outbox"), NodeTokens.in_work_dir(tmp_path))  # type: ignore[arg-type]
    driver = JobTasks(runner=FakeRunner(), client=master, reporter=reporter, breaker=CircuitBreaker(),
                      metrics=AgentMetrics.create())
    async with trio.open_nursery() as nursery:
        await nursery.start(reporter.serve_outbox)
        await driver.run(job(seconds=2), "node-1", draining=False)
        assert trio.current_time() == pytest.approx(2 + DELIVERY_ATTEMPT_S, abs=0.5)
        assert reporter.held_job_ids() == {"j1"} and master.results == []
        master.reachable = True
        with trio.fail_after(60):
            while reporter.held_job_ids():
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [(r.job_id, r.status) for r in master.results] == [("j1", JobStatus.COMPLETED)]


async def claimed(driver: JobTasks, job_id: str) -> None:
    """Until the job's task has started (tracked), without letting the mock clock move."""
    while job_id not in driver.running:
        await trio.sleep(0)


async def test_until_launched_returns_once_the_encoder_runs(autojump_clock: trio.testing.MockClock) -> None:
    """The poller's next claim waits for this: the encoder's launch, not the whole job."""
    driver, _ = tasks(runner=FakeRunner(launch_s=0.03))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: driver.run(job(seconds=5), "node-1", draining=False))
        await claimed(driver, "j1")
        await driver.until_launched()
        assert trio.current_time() == pytest.approx(0.03)
        assert "j1" in driver.running
        nursery.cancel_scope.cancel()


async def test_until_launched_returns_for_a_job_that_ends_without_an_encoder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A job stopped before its process runs (here: canceled while its input is fetched) ends the wait too."""
    driver, sink = tasks(runner=FakeRunner(launch_s=60))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: driver.run(job(seconds=5), "node-1", draining=False))
        await claimed(driver, "j1")

        async def cancel_later() -> None:
            await trio.sleep(1)
            driver.stop("j1", StopReason.CANCELED)

        nursery.start_soon(cancel_later)
        await driver.until_launched()
        assert trio.current_time() == pytest.approx(1)
    assert [result.status for _, result in sink.results] == [JobStatus.CANCELED]
    await driver.until_launched()  # no job here: at once
    assert trio.current_time() == pytest.approx(1)


async def test_until_launched_skips_a_prefetched_job_waiting_for_its_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A prefetched job waits for a slot another job holds: the poller must not wait with it; it waits once the slot is its."""
    limiter = trio.CapacityLimiter(1)
    busy = await Slot.taken(limiter)
    driver, _ = tasks(runner=FakeRunner(launch_s=0.5))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: driver.run(job(seconds=5), "node-1", draining=False, slot=Slot(limiter)))
        await claimed(driver, "j1")
        await driver.until_launched()
        assert trio.current_time() == pytest.approx(0) and driver.prefetched == 1
        await trio.sleep(1)
        busy.release()
        while driver.prefetched:
            await trio.sleep(0)
        await driver.until_launched()
        assert trio.current_time() == pytest.approx(1.5)
        nursery.cancel_scope.cancel()


async def test_a_freed_slots_next_job_launches_before_the_result_is_sent(autojump_clock: trio.testing.MockClock) -> None:
    """The prefetched job takes the slot and starts its encoder; only then does the result of the one before go."""
    limiter = trio.CapacityLimiter(1)
    driver, sink = tasks(runner=FakeRunner(launch_s=0.01))
    first = await Slot.taken(limiter)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: driver.run(job("first", seconds=1), "node-1", draining=False, slot=first))
        nursery.start_soon(lambda: driver.run(job("next", seconds=5), "node-1", draining=False, slot=Slot(limiter)))
        while not sink.results:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    [(delivered_at, result)] = [(at, r) for at, r in sink.results if r.job_id == "first"]
    # The first encode launched at 0.01 and ran 1 s; the next launched 0.01 s after taking the slot.
    assert delivered_at == pytest.approx(1.02) and result.status is JobStatus.COMPLETED


async def test_a_job_cancelled_from_outside_with_a_slot_still_delivers_its_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A cancel from outside ends the job as a shutdown: its slot goes to the prefetched job and the result still goes.

    The result waits for the prefetched job's launch first: a wait that the cancel cut short would skip the delivery.
    """
    limiter = trio.CapacityLimiter(1)
    driver, sink = tasks(runner=FakeRunner(launch_s=0.01))
    slot = await Slot.taken(limiter)
    async with trio.open_nursery() as outer:
        outer.start_soon(lambda: driver.run(job("prefetched", seconds=5), "node-1", draining=False, slot=Slot(limiter)))
        async with trio.open_nursery() as inner:
            inner.start_soon(lambda: driver.run(job("running", seconds=60), "node-1", draining=False, slot=slot))
            await trio.sleep(2.5)
            inner.cancel_scope.cancel()
        assert [(result.job_id, result.status) for _, result in sink.results] == [("running", JobStatus.FAILED)]
        assert "prefetched" in driver.running and not driver.running["prefetched"].prefetched
        outer.cancel_scope.cancel()
