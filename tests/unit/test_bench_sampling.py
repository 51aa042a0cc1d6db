"""bench/_sampling.py: py-spy's raw stacks split by the functions on them, and what happens without py-spy."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from bench import _sampling
from bench._sampling import SamplingError, count_under, sampled

HANDLER = "_Api.next_job (agent/master/app.py:652)"
STORE = "SqlStore.claim (agent/master/store/_sql.py:530)"
SERVER = "H11Protocol.handle (hypercorn/protocol/h11.py:120)"


def test_samples_count_once_when_a_chosen_function_of_the_module_is_on_the_stack(tmp_path: Path) -> None:
    raw = tmp_path / "master.pyspy"
    raw.write_text(
        f"master;run;{HANDLER};{STORE} 7\n"           # under the handler, deeper frames and all
        f"master;run;{HANDLER};{HANDLER} 2\n"         # twice on one stack still counts once
        f"master;run;{SERVER} 5\n"                     # the HTTP server: not under it
        "master;run;next_job (bench/other.py:3) 4\n"   # the same name in another module: not it
        "not a sample line\n"
    )
    samples = count_under(raw, ("next_job", "record_result"), "agent/master/app.py")
    assert (samples.total, samples.under) == (18, 9)
    assert samples.share == pytest.approx(0.5)


def test_an_empty_profile_has_no_share(tmp_path: Path) -> None:
    raw = tmp_path / "empty.pyspy"
    raw.write_text("")
    assert count_under(raw, ("next_job",), "agent/master/app.py").share == 0.0


def test_without_py_spy_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_sampling.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SamplingError, match=r"pip install py-spy"):
        _sampling.py_spy()


async def test_a_process_that_is_gone_is_a_sampling_error(tmp_path: Path) -> None:
    """py-spy given a finished process's pid fails; the error names the pid and what py-spy said."""
    done = await trio.lowlevel.open_process(["true"])
    await done.wait()
    with pytest.raises(SamplingError, match=rf"could not sample process {done.pid}"):
        async with sampled(done.pid, 1, tmp_path / "gone.pyspy"):
            pass
