"""The packages the benchmarks need beyond the agent's own: checked once, before any work."""

from __future__ import annotations

import importlib
import sys

__all__ = ["BENCH_PACKAGES", "require_extras"]

# psutil reads the agents' CPU time; matplotlib draws the plot at the very end, so
# a missing one must be found at the start, not after minutes of measuring.
BENCH_PACKAGES = ("psutil", "matplotlib")


def require_extras() -> None:
    """Return when every package of the ``[bench]`` extra imports; else exit 2 with the command that installs them."""
    missing = []
    for name in BENCH_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        print(
            f"error: the benchmarks need {' and '.join(missing)}, from the [bench] extra: "
            "pip install '.[bench]' in the repository checkout",
            file=sys.stderr,
        )
        sys.exit(2)
