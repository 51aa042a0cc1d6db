"""Fixtures shared by every tier: real processes, the real FFmpeg."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
import trio

from agent.worker.engines.ffmpeg import find_ffmpeg
from tests.support import Processes


@pytest.fixture
async def procs(nursery: trio.Nursery) -> AsyncIterator[Processes]:
    processes = Processes(nursery)
    try:
        yield processes
    finally:
        await processes.stop_all()


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg()
