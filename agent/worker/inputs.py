"""Synthetic test inputs, generated once per (size, fps, duration) and reused.

A job without an ``input`` parameter encodes a generated clip. Making one costs
a full encode, so the clips are kept in a directory of the work dir and shared
by every job that asks for the same shape. A clip only ever appears under its
final name complete: FFmpeg writes a temporary file that is renamed when it
succeeds, so a crash or cancel never leaves a half file that a later job reads;
the temporary files of a killed agent are removed at its next start
(:meth:`InputCache.remove_debris`).

The directory is bounded: after each new clip, the least recently used clips
that no job of this agent is reading are deleted until the total fits
``max_bytes``. A clip's modification time marks its last use.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from .engines.ffmpeg import FFmpegFailed, stderr_tail, test_input_argv
from .guardian import Guardian
from .lru import evict_least_recent
from .processes import capture_child
from .tempfiles import remove_stale_temporaries, temporary_for

__all__ = ["DEFAULT_MAX_BYTES", "InputCache", "InputGenerationFailed"]

log = logging.getLogger(__name__)

# Two gigabytes hold a few hundred short clips, or a handful of long 4K ones.
DEFAULT_MAX_BYTES = 2 * 1024**3
_PATTERN = "testsrc2_*.mp4"


class InputGenerationFailed(FFmpegFailed):
    """FFmpeg could not make the synthetic input; the job cannot start on this worker."""


class InputCache:
    """Generated inputs in ``directory``, made on first request.

    Concurrent requests for the same clip wait for one generation instead of
    racing; requests for different clips run in parallel. Several agents may
    share the directory: each writes its own temporary file and the rename is
    atomic, so the worst case is generating a clip twice; a clip another
    agent is reading may be evicted under it, which POSIX makes harmless for
    a reader that already opened it.
    """

    def __init__(
        self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, guardian: Guardian | None = None
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # Kills a generating FFmpeg should the agent die first.
        self.guardian = guardian
        self._locks: dict[str, trio.Lock] = {}
        self._readers: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def open_clip(
        self, ffmpeg: str, width: int, height: int, fps: float, duration: float, *, keep: bool = True
    ) -> AsyncIterator[Path]:
        """Hold a clip for the length of the block: it is not evicted while held.

        With ``keep=False`` the clip is deleted when the last holder leaves,
        for workers that must not keep inputs (``PERSIST_INPUTS=false``).

        Raises:
            InputGenerationFailed: as :meth:`get`.
        """
        name = self.path_for(width, height, fps, duration).name
        self._readers[name] = self._readers.get(name, 0) + 1
        try:
            yield await self.get(ffmpeg, width, height, fps, duration)
        finally:
            self._readers[name] -= 1
            if not self._readers[name]:
                del self._readers[name]
                if not keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / name)

    def remove_debris(self) -> None:
        """Delete the temporary clips of agents killed while generating them; call at start."""
        remove_stale_temporaries(self.directory)

    def path_for(self, width: int, height: int, fps: float, duration: float) -> Path:
        """Where the clip for this shape lives, whether or not it exists yet."""
        return self.directory / f"testsrc2_{width}x{height}_{fps:g}fps_{duration:g}s.mp4"

    async def get(self, ffmpeg: str, width: int, height: int, fps: float, duration: float) -> Path:
        """The path of a complete clip of this shape, generating it if needed.

        Returns at once when the clip exists. On cancel, FFmpeg is killed and
        its temporary file removed; a waiting caller then generates it itself.

        Raises:
            InputGenerationFailed: FFmpeg exited non-zero; the error carries its
                stderr tail.
        """
        final = self.path_for(width, height, fps, duration)
        lock = self._locks.setdefault(final.name, trio.Lock())
        async with lock:
            # One stat, on every job's way to its encoder: in a worker thread it would cost
            # a thread hop (and a wake-up on a busy machine) for microseconds of work.
            if final.is_file():
                os.utime(final)
                return final
            await trio.Path(self.directory).mkdir(parents=True, exist_ok=True)
            partial = temporary_for(final)  # hidden: never matches a final name
            log.info("generating test input %s", final.name)
            try:
                argv = test_input_argv(ffmpeg, width, height, fps, duration, str(partial))
                result = await capture_child(argv, guardian=self.guardian)
                if result.returncode != 0:
                    raise InputGenerationFailed(
                        f"could not generate the {width}x{height} {fps:g} fps test input",
                        returncode=result.returncode,
                        stderr_tail=stderr_tail(result.stderr),
                    )
                os.replace(partial, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(partial)
            log.info("test input %s ready (%d bytes)", final.name, (await trio.Path(final).stat()).st_size)
            self._evict()
            return final

    def _evict(self) -> None:
        """Delete unheld clips, least recently used first, until the rest fit ``max_bytes``."""
        evict_least_recent(self.directory.glob(_PATTERN), self.max_bytes, self._readers, "test input")
