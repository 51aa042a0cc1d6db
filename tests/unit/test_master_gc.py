"""The master process collects cycles rarely and never walks what start-up made (agent/master/server.py).

Run in a fresh interpreter, as run_master does it to its own process: the
test process's collector is left alone.
"""

from __future__ import annotations

import subprocess
import sys

from agent.master.server import GC_YOUNG_THRESHOLD
from tests.support import REPO


def test_the_master_s_collector_is_tuned_for_many_long_lived_objects() -> None:
    probe = (
        "import gc; from agent.master.server import _tune_garbage_collection; "
        "before = gc.get_threshold(); _tune_garbage_collection(); "
        "print(gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], gc.get_freeze_count() > 1000)"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.split() == [str(GC_YOUNG_THRESHOLD), "True", "True"]
