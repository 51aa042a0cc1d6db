"""The hardware encoder families (GPU vendors) a job may ask for and a worker may offer.

One list, read by the job grammar (:mod:`agent.scenarios`), the master's
matching of jobs to nodes (:mod:`agent.master.scheduler`) and the worker's
encoder probes (:mod:`agent.worker.engines.hwaccel`), so that the three
always agree on the names.
"""

from __future__ import annotations

__all__ = ["HARDWARE_VENDORS", "NVENC", "QSV", "VAAPI"]

NVENC = "nvenc"  # NVIDIA
QSV = "qsv"  # Intel Quick Sync
VAAPI = "vaapi"  # VA-API: Intel and AMD on Linux

# The order the master reads a codec name against them in, and the worker probes them in.
HARDWARE_VENDORS = (NVENC, QSV, VAAPI)
