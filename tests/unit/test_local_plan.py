"""What ``local`` runs, decided from its options before anything starts (agent/local_plan.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.local_plan import GENERATED_DURATION_S, GENERATED_JOBS, LocalRun, OptionRejected, media_files, output_name


def local_run(tmp_path: Path, **fields: Any) -> LocalRun:
    return LocalRun(scenario="144p30-h264", max_concurrent_jobs=1, work_dir=tmp_path / "work", **fields)


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_a_directory_gives_its_media_files_by_name_and_each_file_is_taken_once(tmp_path: Path) -> None:
    """Extensions in any case, nothing from subdirectories or other extensions; a file named twice counts once."""
    media = tmp_path / "media"
    touch(media / "b.MOV", media / "a.mp4", media / "notes.txt", media / "sub" / "c.mp4")
    assert media_files([media, media / "a.mp4"]) == [(media / "a.mp4").resolve(), (media / "b.MOV").resolve()]


def test_a_file_named_directly_is_taken_whatever_its_extension(tmp_path: Path) -> None:
    """The user chose it; FFmpeg decides whether it is media."""
    touch(tmp_path / "capture.bin")
    assert media_files([tmp_path / "capture.bin"]) == [(tmp_path / "capture.bin").resolve()]


@pytest.mark.parametrize(("name", "expected"), [
    ("clip.mov", "clip.144p30-h264.mp4"),
    ("My holiday (1).mkv", "My_holiday__1_.144p30-h264.mp4"),
    ("-dash..dots.mp4", "dash_dots.144p30-h264.mp4"),
    ("..mp4", "input.144p30-h264.mp4"),
])
def test_output_names_are_the_stem_and_scenario_made_safe_for_a_worker(name: str, expected: str) -> None:
    """Characters a worker refuses in a file name become _, and no name starts with '.' or '-'."""
    assert output_name(Path(name), "144p30-h264", ".mp4") == expected


def test_each_input_file_is_one_job_read_in_place_and_written_to_the_output_directory(tmp_path: Path) -> None:
    """The worker is allowed the files' directories and the output directory; no duration means the whole file."""
    touch(tmp_path / "a" / "one.mp4", tmp_path / "b" / "two.webm")
    plan = local_run(tmp_path, inputs=[tmp_path / "a" / "one.mp4", tmp_path / "b"], output_dir=tmp_path / "out").plan()
    out = (tmp_path / "out").resolve()
    assert [r.parameters for r in plan.requests] == [
        {"input": str((tmp_path / "a" / "one.mp4").resolve()), "output": str(out / "one.144p30-h264.mp4")},
        {"input": str((tmp_path / "b" / "two.webm").resolve()), "output": str(out / "two.144p30-h264.mp4")},
    ]
    assert plan.input_dirs == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]
    assert plan.output_dir == out and out.is_dir() and plan.spec.duration is None


def test_without_inputs_the_generated_clip_runs_as_before_and_no_output_directory_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four jobs of five seconds on the generated clip, outputs in the work dir, nothing created in the cwd."""
    monkeypatch.chdir(tmp_path)
    plan = local_run(tmp_path).plan()
    assert len(plan.requests) == GENERATED_JOBS and plan.spec.duration == GENERATED_DURATION_S
    assert (plan.input_dirs, plan.output_dir, plan.spec.input) == ([], None, "")
    assert list(tmp_path.iterdir()) == []


def test_a_local_file_as_a_param_is_an_input_and_a_url_stays_a_param(tmp_path: Path) -> None:
    """--param input=PATH runs as --input PATH; --param input=URL is one job per --jobs, as before."""
    touch(tmp_path / "clip.mp4")
    as_file = local_run(tmp_path, parameters={"input": str(tmp_path / "clip.mp4")}, output_dir=tmp_path / "o").plan()
    assert as_file.requests[0].parameters["input"] == str((tmp_path / "clip.mp4").resolve())
    url = "https://example.com/a.mp4"
    as_url = local_run(tmp_path, parameters={"input": url}, jobs=2).plan()
    assert [r.parameters for r in as_url.requests] == [{"input": url}] * 2


@pytest.mark.parametrize(("fields", "says"), [
    ({"inputs": ["clip.mp4"], "jobs": 3}, "--jobs 3: counts jobs on the generated clip"),
    ({"inputs": ["clip.mp4"], "parameters": {"input": "https://example.com/a.mp4"}},
     "--param input=https://example.com/a.mp4: with --input"),
    ({"inputs": ["empty"]}, "no media files directly in this directory"),
    ({"inputs": ["nothing.mp4"]}, "--input nothing.mp4: no such file or directory"),
    ({"inputs": ["clip.mp4"], "output_dir": "clip.mp4"}, "--output-dir clip.mp4: cannot create it"),
    ({"inputs": ["clip.mp4"], "parameters": {"bitrate": "lots"}}, "--param bitrate=lots"),
])
def test_options_no_run_could_use_are_refused_naming_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], says: str
) -> None:
    """Each message starts with the flag and value to change."""
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "clip.mp4")
    (tmp_path / "empty").mkdir()
    fields = {key: [Path(v) for v in value] if key == "inputs" else value for key, value in fields.items()}
    if "output_dir" in fields:
        fields["output_dir"] = Path(fields["output_dir"])
    with pytest.raises(OptionRejected) as refused:
        local_run(tmp_path, **fields).plan()
    assert says in str(refused.value), refused.value
