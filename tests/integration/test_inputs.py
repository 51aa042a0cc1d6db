"""The generated-input cache with real FFmpeg, and stub encoders for the faults (agent/worker/inputs.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import trio

from agent.worker.engines import ffmpeg as ff
from agent.worker.inputs import InputCache, InputGenerationFailed

STEP_TIMEOUT_S = 30


def counting_ffmpeg(tmp_path: Path) -> tuple[str, Path]:
    """A wrapper that logs each run, then execs the real FFmpeg."""
    runs = tmp_path / "runs.log"
    wrapper = tmp_path / "ffmpeg-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho run >> {shlex.quote(str(runs))}\nexec {shlex.quote(ff.find_ffmpeg())} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), runs


def stub_ffmpeg(tmp_path: Path, body: str) -> str:
    """A fake ffmpeg that writes something to its output (the last argument) and then runs ``body``."""
    stub = tmp_path / "ffmpeg-stub"
    stub.write_text('#!/bin/sh\nfor last; do :; done\necho partial > "$last"\n' + body + "\n")
    stub.chmod(0o755)
    return str(stub)


def run_count(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


async def test_concurrent_requests_for_one_clip_generate_it_once(tmp_path: Path) -> None:
    """Five jobs asking together wait for a single FFmpeg run and get the same complete file."""
    ffmpeg, runs = counting_ffmpeg(tmp_path)
    cache = InputCache(tmp_path / "inputs")
    paths: list[Path] = []

    async def get() -> None:
        paths.append(await cache.get(ffmpeg, 160, 120, 30, 1))

    with trio.fail_after(STEP_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(get)
    assert run_count(runs) == 1
    assert len(set(paths)) == 1 and len(paths) == 5
    assert [p.name for p in (tmp_path / "inputs").iterdir()] == [paths[0].name]
    info = await ff.probe_media(ff.find_ffmpeg(), paths[0])
    assert (info.width, info.height, info.fps) == (160, 120, 30.0)


async def test_a_clip_is_reused_across_caches_and_distinct_per_shape(tmp_path: Path) -> None:
    """A restarted agent reuses what is on disk; another size, rate or length is another clip."""
    ffmpeg, runs = counting_ffmpeg(tmp_path)
    directory = tmp_path / "inputs"
    with trio.fail_after(STEP_TIMEOUT_S):
        first = await InputCache(directory).get(ffmpeg, 160, 120, 30, 1)
        again = await InputCache(directory).get(ffmpeg, 160, 120, 30, 1)
        others = {
            await InputCache(directory).get(ffmpeg, 128, 72, 30, 1),
            await InputCache(directory).get(ffmpeg, 160, 120, 25, 1),
            await InputCache(directory).get(ffmpeg, 160, 120, 30, 0.5),
        }
    assert again == first
    assert run_count(runs) == 4
    assert first not in others and len(others) == 3


async def test_a_failed_generation_raises_with_the_reason_and_leaves_no_file(tmp_path: Path) -> None:
    """The half-written temporary file is removed, so nothing can reuse it."""
    ffmpeg = stub_ffmpeg(tmp_path, "echo 'Unknown encoder libx264' >&2\nexit 1")
    cache = InputCache(tmp_path / "inputs")
    with pytest.raises(InputGenerationFailed, match="Unknown encoder libx264") as info:
        await cache.get(ffmpeg, 160, 120, 30, 1)
    assert info.value.returncode == 1
    assert list((tmp_path / "inputs").iterdir()) == []


async def test_a_cancelled_generation_leaves_no_file_and_the_next_caller_generates(tmp_path: Path) -> None:
    """Cancel kills FFmpeg mid-write; the next request starts over instead of reading the fragment."""
    hanging = stub_ffmpeg(tmp_path, "exec sleep 30")
    cache = InputCache(tmp_path / "inputs")
    with trio.move_on_after(0.5) as scope:
        await cache.get(hanging, 160, 120, 30, 1)
    assert scope.cancelled_caught
    assert list((tmp_path / "inputs").iterdir()) == []

    with trio.fail_after(STEP_TIMEOUT_S):
        path = await cache.get(ff.find_ffmpeg(), 160, 120, 30, 1)
    assert await ff.decodes_cleanly(ff.find_ffmpeg(), path)


async def test_the_least_recently_used_clips_go_first_but_never_one_in_use(tmp_path: Path) -> None:
    """With room for about two clips, a third evicts the oldest unheld one; a held clip survives."""
    ffmpeg = ff.find_ffmpeg()
    directory = tmp_path / "inputs"
    with trio.fail_after(STEP_TIMEOUT_S):
        size = (await InputCache(directory).get(ffmpeg, 160, 120, 30, 1)).stat().st_size
        cache = InputCache(directory, max_bytes=int(size * 2.5))
        async with cache.open_clip(ffmpeg, 160, 120, 30, 1) as held:
            second = await cache.get(ffmpeg, 160, 120, 25, 1)
            await cache.get(ffmpeg, 160, 120, 24, 1)  # over the bound: the oldest unheld clip goes
            assert held.exists(), "a clip in use is never evicted"
            assert not second.exists()
            await cache.get(ffmpeg, 160, 120, 15, 1)
            assert held.exists()
    assert sum(p.stat().st_size for p in directory.iterdir()) <= cache.max_bytes + size


async def test_a_clip_opened_without_keep_is_removed_when_the_last_holder_leaves(tmp_path: Path) -> None:
    """PERSIST_INPUTS=false: two jobs share the clip; it goes when both are done."""
    cache = InputCache(tmp_path / "inputs")
    ffmpeg = ff.find_ffmpeg()
    with trio.fail_after(STEP_TIMEOUT_S):
        async with cache.open_clip(ffmpeg, 160, 120, 30, 1, keep=False) as first:
            async with cache.open_clip(ffmpeg, 160, 120, 30, 1, keep=False) as second:
                assert first == second
            assert first.exists()
    assert not first.exists()
