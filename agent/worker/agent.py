"""The worker agent: one nursery holding the status server, heartbeats and the poller.

::

    Agent.serve
     ├─ guardian        kills every child process should the agent die (agent.worker.guardian)
     ├─ status server   /metrics /health /ready /jobs
     ├─ heartbeat task  every heartbeat_interval; re-registers on 404
     ├─ outbox task     delivers results the master could not take when they were ready
     ├─ event listener  websocket pushes: job available, cancel, drain (when the master has them)
     ├─ adaptive tuner  with --adaptive: sets the limiter's size from measured throughput
     └─ poller          claims while a slot is free and the breaker is closed;
                        its job nursery holds one task per job (agent.worker.jobs)

Shutdown is a cancel scope, not a flag: ``drain()`` cancels the poller's scope;
running jobs then get ``shutdown_grace`` seconds to finish, after which each
is told to stop (``StopReason.SHUTDOWN``) and reports its result.
``cancel_now()`` skips the grace; ``quit()`` also skips the encoders' graceful
stop and keeps the results in the outbox for the next start. See "The worker
agent" in docs/architecture.rst.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import urllib.parse
from functools import partial

import attrs
import psutil
import trio

from agent.client import (
    AuthError,
    MasterClient,
    MasterError,
    MasterUnavailable,
    NameInUse,
    TLSVerifyError,
    UnknownToMaster,
)
from agent.config import AgentConfig, ConfigError
from agent.models import AgentEvent, Engine, HeartbeatReport, NodeRegistration
from agent.tls import client_context
from agent.worker.adaptive import serve_adaptive
from agent.worker.backoff import Backoff
from agent.worker.breaker import BreakerState, CircuitBreaker
from agent.worker.encoder import StopPolicy
from agent.worker.engines.ffmpeg import EncoderNotFound, find_ffmpeg
from agent.worker.engines.hwaccel import candidates as hardware_candidates
from agent.worker.events import listen_events
from agent.worker.guardian import Guardian
from agent.worker.hardware import HostFacts
from agent.worker.identity import NodeTokens
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.jobs import JobTasks
from agent.worker.lifecycle import StopReason
from agent.worker.master_host import HostDecision, decide, is_master_host
from agent.worker.metrics import AgentMetrics
from agent.worker.poller import Poller
from agent.worker.reporter import DELIVERY_ATTEMPT_S, Outbox, ResultReporter
from agent.worker.state import AgentState
from agent.worker.status_server import StatusPortUnavailable, create_status_app, serve_status
from agent.worker.tempfiles import remove_stale_temporaries

log = logging.getLogger(__name__)


def worst_case_stop_s(config: AgentConfig) -> float:
    """The longest a drained agent takes to exit, which supervisors' stop timeouts must allow.

    Running jobs get the shutdown grace; their encoders are then stopped within
    the kill timeout; each result gets one delivery attempt; last, the
    deregistration gets as long again (``deploy/`` files are checked against it).
    """
    encoder_stop = StopPolicy.within(config.kill_timeout).worst_case
    return config.shutdown_grace + encoder_stop + DELIVERY_ATTEMPT_S + DELIVERY_ATTEMPT_S


@attrs.define
class Agent:
    config: AgentConfig
    client: MasterClient
    runner: JobRunner
    state: AgentState = attrs.field(factory=AgentState)
    # Runs on the master's own host (allowed by the operator); registered as a label.
    master_as_worker: bool = False
    metrics: AgentMetrics = attrs.field(factory=AgentMetrics.create)
    poller: Poller = attrs.field(init=False)
    jobs: JobTasks = attrs.field(init=False)
    reporter: ResultReporter = attrs.field(init=False)
    _registration: NodeRegistration | None = None
    # The poller and the heartbeats may both find the node forgotten: one registers again.
    _registering: trio.Lock = attrs.field(factory=trio.Lock)
    _startup_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _poll_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # The wait for running jobs to finish by themselves; cancelled, they are stopped at once.
    _grace_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _events_scope: trio.CancelScope | None = None

    def __attrs_post_init__(self) -> None:
        self.reporter = ResultReporter(
            self.client, Outbox(self.config.work_dir / "outbox"), NodeTokens.in_work_dir(self.config.work_dir)
        )
        breaker = CircuitBreaker(
            threshold=self.config.breaker_threshold,
            cooldown=self.config.breaker_cooldown,
            max_cooldown=self.config.breaker_max_cooldown,
            on_change=self._breaker_changed,
        )
        self.jobs = JobTasks(
            runner=self.runner,
            client=self.client,
            reporter=self.reporter,
            breaker=breaker,
            metrics=self.metrics,
            running=self.state.running,
        )
        self.poller = Poller(
            client=self.client,
            jobs=self.jobs,
            breaker=breaker,
            state=self.state,
            limiter=trio.CapacityLimiter(self.config.max_concurrent_jobs),
            poll_interval=self.config.poll_interval,
            reregister=self.register,
            prefetch=self.config.prefetch,
        )
        self.metrics.max_concurrent_jobs.set(self.config.max_concurrent_jobs)

    @classmethod
    def from_config(cls, config: AgentConfig, client: MasterClient, *, master_as_worker: bool = False) -> Agent:
        """Find the encoder and lay out the work dir, removing what a killed run left; raises EncoderNotFound.

        Starts no process: the engines are detected by :meth:`serve` once the
        guardian runs, so that no probe can outlive the agent.
        """
        ffmpeg = find_ffmpeg(config.ffmpeg)
        config.work_dir.mkdir(parents=True, exist_ok=True)
        guardian = Guardian()
        inputs = InputCache(
            config.work_dir / "inputs", max_bytes=config.input_cache_mb * 1024 * 1024, guardian=guardian
        )
        inputs.remove_debris()
        runner = JobRunner(settings=config, ffmpeg=ffmpeg, inputs=inputs, guardian=guardian, master=client)
        log.info("Encoder: %s", ffmpeg)
        agent = cls(config=config, client=client, runner=runner, master_as_worker=master_as_worker)
        remove_stale_temporaries(agent.reporter.outbox.directory)
        return agent

    async def _detect_engines(self) -> None:
        await self.runner.detect_engines(self.config.gst_launch)
        hardware = self.runner.hardware
        log.info(
            "Engines: %s; hardware encoders: %s",
            ", ".join(self.runner.engines), ", ".join(h.name for h in hardware) or "none",
        )
        self.metrics.report_capabilities(
            {engine.value: engine.value in self.runner.engines for engine in (Engine.FFMPEG, Engine.GSTREAMER)},
            {candidate.name: candidate in hardware for candidate in hardware_candidates()},
        )

    def _breaker_changed(self, state: BreakerState, reason: str) -> None:
        self.state.breaker_open = state is not BreakerState.CLOSED
        self.metrics.breaker_state.set(state.value)
        level = logging.INFO if state is BreakerState.CLOSED else logging.WARNING
        log.log(level, "Circuit breaker %s: %s", state.name.lower().replace("_", "-"), reason)
        if state is BreakerState.OPEN:
            self.jobs.hand_back_prefetched()  # claimed ahead, they must not start on a failing node

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until drained; ``started()`` hands back the status server's URL."""
        async with trio.open_nursery() as nursery:
            app = create_status_app(self.state, self.metrics)
            if self.runner.guardian is not None:
                await nursery.start(self.runner.guardian.serve)
                if self.runner.guardian.pid is not None:  # the agent's own, not an encoder, in /metrics
                    self.metrics.usage.helper_pids.add(self.runner.guardian.pid)
            await self._detect_engines()  # probes start only once the guardian can kill them
            urls = await nursery.start(serve_status, app, self.config.metrics_host, self.config.metrics_port)
            port = urllib.parse.urlsplit(urls[0]).port or self.config.metrics_port
            log.info("Metrics and health on %s (/metrics /health /ready /jobs)", urls[0])
            self._registration = self._describe_node(port)
            with self._startup_scope:  # a drain while the master is still unreachable ends here
                await self.register()
            task_status.started(urls[0])
            if not self.state.draining:
                await self._serve_registered(nursery)
            nursery.cancel_scope.cancel()
        await self._deregister()
        log.info("Agent stopped")

    async def _deregister(self) -> None:
        """After a clean stop, tell the master, so it shows the node offline at once.

        Skipped while results wait in the outbox: their jobs stay leased to this
        node for the next start. A master that cannot be reached, or lacks the
        call, finds the node silent three heartbeats later instead.
        """
        if not self.state.node_id or self.reporter.held_job_ids():
            return
        with trio.move_on_after(DELIVERY_ATTEMPT_S):
            try:
                await self.client.deregister(self.state.node_id)
            except MasterError as exc:
                log.debug("Could not deregister: %s", exc)
                return
            log.info("Deregistered node %s", self.state.node_id)

    async def _serve_registered(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._heartbeats)
        nursery.start_soon(self._listen_events)
        await nursery.start(self.reporter.serve_outbox)
        if self.config.adaptive:
            nursery.start_soon(partial(
                serve_adaptive, self.poller.limiter, self.state.running, self.metrics,
                min_jobs=self.config.adaptive_min_jobs, max_jobs=self.config.adaptive_max_jobs,
                interval=self.config.adaptive_interval,
            ))
        log.info(
            "Worst-case stop time %.0fs (grace %.0fs + encoder stop %.0fs + result report %.0fs"
            " + deregistration %.0fs)",
            worst_case_stop_s(self.config), self.config.shutdown_grace, self.runner.stop.worst_case,
            DELIVERY_ATTEMPT_S, DELIVERY_ATTEMPT_S,
        )
        await self._run_jobs_until_drained()

    async def _run_jobs_until_drained(self) -> None:
        """Claim until drained; then running jobs get the grace, and what still runs is stopped."""
        async with trio.open_nursery() as job_nursery:
            with self._poll_scope:
                await self.poller.poll(job_nursery)
            if self.state.running:
                log.info(
                    "Draining: %d running job(s) get %.0fs to finish",
                    len(self.state.running), self.config.shutdown_grace,
                )
            with self._grace_scope:
                self._grace_scope.deadline = trio.current_time() + self.config.shutdown_grace
                await self.jobs.wait_idle()
            self.jobs.stop_all(StopReason.SHUTDOWN)

    def drain(self) -> None:
        """Stop claiming and hand prefetched jobs back unstarted; running jobs get the shutdown grace."""
        if not self.state.draining:
            log.info("Draining: no new jobs will be claimed")
        self.state.draining = True
        self._startup_scope.cancel()
        self._poll_scope.cancel()
        self.jobs.hand_back_prefetched()

    def cancel_now(self) -> None:
        """Stop everything now: encoders are stopped and their results reported."""
        log.info("Stopping running jobs now")
        self.drain()
        self._grace_scope.cancel()
        self.jobs.stop_all(StopReason.SHUTDOWN)

    async def _listen_events(self) -> None:
        """Listen on the node's event channel, opened anew after each registration (a new token).

        A refused channel (a master without one, or one that no longer knows
        this node) is tried again only once the node has registered again.
        """
        while True:
            with trio.CancelScope() as self._events_scope:
                await listen_events(
                    self.config.master_url, self.state.node_id, self._on_event,
                    api_key=self.client.node_token or self.config.api_key, ssl_context=self.client.tls_context,
                )
                await trio.sleep_forever()
            self._events_scope = None

    def _on_event(self, event: AgentEvent) -> None:
        if event.type == AgentEvent.JOB_AVAILABLE:
            self.poller.wake()
        elif event.type == AgentEvent.CANCEL:
            self.jobs.stop(event.job_id, StopReason.CANCELED)
        elif event.type == AgentEvent.DRAIN:
            # The master keeps the drain and leases nothing to us; we stay connected and idle.
            log.info("The master drained this node: running jobs finish, no new ones until undrained")

    def quit(self) -> None:
        """Kill the encoders at once and exit; results wait in the outbox for the next start."""
        log.info("Quitting: killing encoders now")
        self.runner.stop.interrupt_wait = self.runner.stop.terminate_wait = 0.0
        self.reporter.offline = True
        self.cancel_now()

    def _describe_node(self, port: int) -> NodeRegistration:
        host = HostFacts.detect()
        return NodeRegistration(
            address=self.config.node_address(port),
            type="server",
            cpu_threads=host.cpu_threads,
            cpu_model=host.cpu_model,
            ram_total_bytes=host.ram_total_bytes,
            has_gpu=bool(self.runner.hardware),
            gpu_type=",".join(sorted({h.vendor for h in self.runner.hardware})),
            gpu_capabilities=[h.name for h in self.runner.hardware],
            labels={
                "engines": ",".join(self.runner.engines),
                "max_concurrent_jobs": str(self.config.max_concurrent_jobs),
                "metrics_port": str(port),
                **({"master_as_worker": "true"} if self.master_as_worker else {}),
            },
        )

    async def register(self) -> None:
        """Register (again), retrying while the master is unreachable.

        The registration shows the token of this node's last run (kept in the
        work dir), so the master knows a restart from a second agent under the
        same name, and lists the jobs whose results are still to be delivered,
        so that the master keeps their leases and hands back the rest.

        A caller that waited while another registered the node again returns:
        a second registration would show the token the first replaced, and be
        refused as another agent under the same name.

        Raises:
            AuthError: the master refused our credentials; retrying cannot help.
            TLSVerifyError: the master's certificate did not verify; neither can it.
            NameInUse: another running agent holds our node name.
        """
        forgotten = self.state.node_id
        async with self._registering:
            if self.state.node_id == forgotten:
                await self._register()

    async def _register(self) -> None:
        assert self._registration is not None
        address = self._registration.address
        registration = attrs.evolve(
            self._registration,
            node_token=self.reporter.tokens.for_address(address),
            active_job_ids=sorted(self.reporter.held_job_ids()),
        )
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            try:
                node = (await self.client.register(registration)).node
            except MasterUnavailable as exc:
                delay = backoff.next()
                if backoff.failures == 1:
                    log.warning("Cannot register with %s: %s; retrying", self.config.master_url, exc)
                else:
                    log.debug("still cannot register (%s); retrying in %.1fs", exc, delay)
                await trio.sleep(delay)
                continue
            break
        if self.client.node_token:
            self.reporter.tokens.save(address, node.id, self.client.node_token)
        if self._events_scope is not None:
            self._events_scope.cancel()  # the channel must be opened again with the new token
        self.state.node_id = node.id
        log.info("Registered with %s as node %s (%s)", self.config.master_url, node.id, node.address)

    async def _heartbeats(self) -> None:
        warned = False
        while True:
            await trio.sleep(self.config.heartbeat_interval)
            report = HeartbeatReport(
                # Jobs whose results are still on their way are ours too, or the master hands them back.
                active_job_ids=sorted(set(self.state.running) | self.reporter.held_job_ids()),
                max_concurrent_jobs=self.poller.limit,
                # The machine's CPU use since the previous heartbeat, for the dashboard's node list.
                cpu_load_percent=psutil.cpu_percent(interval=None),
            )
            try:
                reply = await self.client.heartbeat(self.state.node_id, report)
            except UnknownToMaster:
                log.warning("The master forgot node %s; registering again", self.state.node_id)
                await self.register()
                continue
            except (AuthError, TLSVerifyError, NameInUse):
                raise
            except MasterError as exc:
                if not warned:
                    log.warning("Heartbeat failed: %s", exc)
                warned = True
                continue
            warned = False
            for job_id in reply.cancel_job_ids:
                self.jobs.stop(job_id, StopReason.CANCELED)


async def watch_signals(agent: Agent, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """First SIGTERM/SIGINT drains, the second stops running jobs at once, SIGQUIT quits."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGQUIT:
                agent.quit()
            elif agent.state.draining:
                log.info("%s again: stopping running jobs now", name)
                agent.cancel_now()
            else:
                log.info("%s: draining (send it again to stop running jobs now)", name)
                agent.drain()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of nested nursery groups: one error, said once."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _warn_if_root() -> None:
    if os.geteuid() == 0:
        log.warning(
            "Running as root: an encoder exploited by a crafted input would own this machine; "
            "run the agent as an unprivileged user (the Dockerfile does)"
        )


async def run_agent(config: AgentConfig) -> int:
    """The worker agent as a program: returns the exit code.

    0 after a clean drain, or when the operator declined to run on the
    master's host; 2 after one message that says which setting to fix: the
    master refused our credentials, its certificate did not verify, a TLS
    file does not load, another running agent holds our node name, the
    status server cannot listen on ``--metrics-port``, or the master runs on
    this host and ``allow_master_as_worker`` is off.
    """
    _warn_if_root()
    master_as_worker = await is_master_host(config.master_url)
    if master_as_worker:
        decision = await decide(config, interactive=sys.stdin.isatty())
        if decision is not HostDecision.RUN:
            return 0 if decision is HostDecision.DECLINED else 2
    try:
        verify = client_context(config.tls)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    code = 0
    async with MasterClient(config.master_url, config.api_key, verify=verify) as client:
        try:
            agent = Agent.from_config(config, client, master_as_worker=master_as_worker)
        except EncoderNotFound as exc:
            log.error("%s", exc)
            return 2
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_signals, agent)
                await agent.serve()
                nursery.cancel_scope.cancel()
        except* (AuthError, TLSVerifyError, NameInUse, StatusPortUnavailable) as group:
            log.error("%s", _first(group))
            code = 2
    return code
