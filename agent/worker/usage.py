"""CPU and memory of the agent and of the processes it started, read when Prometheus scrapes.

Two groups of processes, so that a dashboard can tell the agent's own cost
from the encoding it runs:

* ``agent``: the agent process and its helpers (the guardian, see
  :mod:`agent.worker.guardian`), which live as long as it does;
* ``encoder``: every other descendant — the encoders, and the probes and
  test-input generation around them — with their own children.

Memory is what is resident now. CPU is a counter, so that ``rate()`` gives
cores in use: a child that exits takes its CPU time with it, but the kernel
adds the time of every child the agent has reaped to the agent's
``children_user`` and ``children_system``. The encoders' counter is that
sum plus the time of the live descendants (each with the reaped children it
holds). A process reaped between two reads of one scrape could be seen
twice, or not at all, and the next scrape would go down: the counter never
reports less than it did, so that ``rate()`` sees no reset.

A custom collector rather than gauges set by a task: nothing runs between
scrapes, and a scrape reads one consistent moment.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["ProcessUsage", "UsageSample"]

# What a process can do between listing it and reading it: exit, or be out of reach.
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


@attrs.frozen
class UsageSample:
    """One reading of both groups: CPU seconds since start, resident bytes, and live encoder processes."""

    agent_cpu_s: float = 0.0
    agent_rss: int = 0
    encoder_cpu_s: float = 0.0
    encoder_rss: int = 0
    encoder_processes: int = 0


def _own_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _cpu_with_reaped(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


@attrs.define(eq=False)  # a registry keeps its collectors in a dict
class ProcessUsage:
    """A Prometheus collector: ``ffrtmp_{agent,encoder}_{cpu_seconds_total,resident_memory_bytes}`` and more.

    Args:
        helper_pids: children that belong to the agent rather than to a job
            (the guardian); the agent adds them once they run.
        process: the agent; this process unless a test watches another one.

    Example::

        usage = ProcessUsage()
        registry.register(usage)
        usage.helper_pids.add(guardian_pid)
    """

    helper_pids: set[int] = attrs.field(factory=set)
    process: psutil.Process = attrs.field(factory=psutil.Process)
    _encoder_cpu_high: float = 0.0

    def sample(self) -> UsageSample:
        """Read the process tree now; processes that exit while it is read are left out."""
        agent_cpu, agent_rss = _own_cpu(self.process), self.process.memory_info().rss
        encoder_cpu, encoder_rss, encoders = 0.0, 0, 0
        for child in self.process.children(recursive=True):
            try:
                if child.pid in self.helper_pids:
                    agent_cpu += _own_cpu(child)
                    agent_rss += child.memory_info().rss
                    continue
                encoder_cpu += _cpu_with_reaped(child)
                encoder_rss += child.memory_info().rss
                encoders += 1
            except _GONE:
                continue
        times = self.process.cpu_times()
        reaped = float(times.children_user + times.children_system)
        # Reaped helpers are not encoders, but a helper is reaped only as the agent stops.
        self._encoder_cpu_high = max(self._encoder_cpu_high, reaped + encoder_cpu)
        return UsageSample(agent_cpu, agent_rss, self._encoder_cpu_high, encoder_rss, encoders)

    def collect(self) -> Iterator[Metric]:
        sample = self.sample()
        for group, cpu, rss, whose in (
            ("agent", sample.agent_cpu_s, sample.agent_rss, "the agent process and its guardian"),
            ("encoder", sample.encoder_cpu_s, sample.encoder_rss,
             "the agent's other child processes (encoders, probes, test-input generation) and theirs"),
        ):
            yield CounterMetricFamily(f"ffrtmp_{group}_cpu_seconds", f"CPU time, user and system, of {whose}", cpu)
            yield GaugeMetricFamily(f"ffrtmp_{group}_resident_memory_bytes", f"Resident memory of {whose}", rss)
        yield GaugeMetricFamily(
            "ffrtmp_encoder_processes", "Child processes of the agent running now, its guardian aside",
            value=sample.encoder_processes,
        )
