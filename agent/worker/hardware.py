"""What this machine offers, for the registration the master schedules by."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import attrs


@attrs.frozen
class HostFacts:
    cpu_threads: int
    cpu_model: str
    ram_total_bytes: int

    @classmethod
    def detect(cls) -> HostFacts:
        return cls(
            cpu_threads=os.cpu_count() or 1,
            cpu_model=_cpu_model(),
            ram_total_bytes=_ram_total_bytes(),
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_total_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
