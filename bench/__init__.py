"""Benchmarks a user runs on their own machine: ``python -m bench.bandwidth_scaling``,
``python -m bench.dispatch``, ``python -m bench.farm_sim``, ``python -m bench.ladder``,
``python -m bench.master_load``.

Layout: ``_farm`` starts the real master (in the bench process) and real
agents (as processes) and reads their CPU time; ``_report`` writes JSON, CSV
and markdown; ``goloop`` models the original Go agent's claim loop;
``_keepalive`` is the thin HTTP client of the load benchmarks. The
scripts reuse the test suite's process helpers (``tests.support``), so run
them from a checkout of the repository, as modules or as files
(``python bench/dispatch.py``).

Importing the package first checks for the ``[bench]`` extra, so a missing
package is one line naming the install command, before any work starts.
"""

from bench._extras import require_extras

require_extras()
