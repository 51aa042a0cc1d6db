"""Which waiting long-polls a ring wakes (agent/master/doorbell.py)."""

from __future__ import annotations

from agent.master import scheduler
from agent.master.doorbell import Doorbell, Waiter
from agent.models import Job, JobStatus, Node

CPU = Node(id="cpu", address="cpu:1")
GPU = Node(id="gpu", address="gpu:1", has_gpu=True, gpu_capabilities=["h264_nvenc"])
PLAIN = Job(id="plain", scenario="720p30-h264", status=JobStatus.PENDING)
NVENC = Job(id="nvenc", scenario="720p30-h264", status=JobStatus.PENDING, parameters={"codec": "h264_nvenc"})


def woken(*waiters: Waiter) -> list[bool]:
    return [waiter.woken.is_set() for waiter in waiters]


def test_each_job_wakes_the_longest_waiting_that_can_take_it() -> None:
    bell = Doorbell()
    first, second, gpu, unknown = bell.enter(CPU), bell.enter(CPU), bell.enter(GPU), bell.enter(None)
    bell.ring([PLAIN])
    assert woken(first, second, gpu, unknown) == [True, False, False, False]
    assert first.woken_for == PLAIN
    bell.ring([NVENC])
    assert woken(second, gpu, unknown) == [False, True, False]
    bell.ring([NVENC])  # no GPU node waits: a node not seen yet may be one
    assert woken(second, unknown) == [False, True]
    assert bell.waiting == 1


def test_a_drained_node_is_woken_only_by_a_ring_for_everyone() -> None:
    bell = Doorbell()
    drained, live = bell.enter(scheduler.drain(CPU)), bell.enter(CPU)
    bell.ring_count(1)
    assert woken(drained, live) == [False, True]
    bell.ring([PLAIN])
    assert woken(drained) == [False]
    bell.ring_all()
    assert woken(drained) == [True]
    assert bell.waiting == 0


def test_a_wake_not_answered_by_a_claim_goes_to_the_next_waiter() -> None:
    """Woken during its own claim, which then took another job: the wake is passed on, for the same job."""
    bell = Doorbell()
    busy, idle, gpu = bell.enter(CPU), bell.enter(CPU), bell.enter(GPU)
    bell.ring([PLAIN])
    bell.leave(busy)
    assert woken(idle, gpu) == [True, False] and idle.woken_for == PLAIN
    bell.leave(idle, used=True)  # its claim answered the wake
    assert woken(gpu) == [False]
    bell.ring_count(1)
    bell.leave(gpu)  # by count: passed on by count, and nobody is left
    assert bell.waiting == 0


def test_leaving_unwoken_wakes_nobody_and_every_ring_for_jobs_is_heard() -> None:
    """``rung`` (the push channel's cue) is set by each ring that has jobs, whoever it wakes."""
    bell = Doorbell()
    rung = bell.rung
    waiter, other = bell.enter(CPU), bell.enter(CPU)
    bell.leave(waiter)
    assert woken(other) == [False] and not rung.is_set()
    bell.ring([])  # no job became pending
    assert not rung.is_set()
    bell.ring([PLAIN])
    assert rung.is_set() and not bell.rung.is_set()
