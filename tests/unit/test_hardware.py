"""The hardware vendor names, one list read by the job grammar, the master and the worker."""

from __future__ import annotations

import attrs
import pytest

from agent.hardware import HARDWARE_VENDORS
from agent.master import scheduler
from agent.models import Job, Node
from agent.scenarios import build_spec
from agent.worker.engines import hwaccel


def test_the_worker_knows_how_to_reach_every_vendor_a_job_may_name() -> None:
    """Each vendor has the worker's device setup, and there is no setup for a vendor jobs cannot name."""
    assert tuple(hwaccel.VENDORS) == HARDWARE_VENDORS


@pytest.mark.parametrize("vendor", HARDWARE_VENDORS)
def test_a_job_naming_a_vendor_is_accepted_and_goes_only_to_a_node_offering_it(vendor: str) -> None:
    """The grammar takes the vendor as a choice and as a codec suffix; the master routes both to its GPU."""
    by_choice = Job(id="a", scenario="720p30-h264", parameters={"hardware": vendor})
    by_codec = Job(id="b", scenario="720p30-h264", parameters={"codec": f"h264_{vendor}"})
    assert build_spec(by_choice).hardware == build_spec(by_codec).hardware == vendor
    cpu = Node(id="n1", address="host:9091")
    gpu = attrs.evolve(cpu, has_gpu=True, gpu_capabilities=[f"h264_{vendor}"])
    for job in (by_choice, by_codec):
        assert not scheduler.can_run(job, cpu)
        assert scheduler.can_run(job, gpu)
