"""Synthetic test inputs, generated once per (size, fps, duration) and reused.

A job without an ``input`` parameter encodes a generated clip. Making one costs
a full encode, so the clips are kept in a directory of the work dir and shared
by every job that asks for the same shape. A clip only ever appears under its
final name complete: FFmpeg writes a temporary file that is renamed when it
succeeds, so a crash or cancel never leaves a half file that a later job reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

import trio

from .engines.ffmpeg import FFmpegFailed, stderr_tail, test_input_argv

__all__ = ["InputCache", "InputGenerationFailed"]

log = logging.getLogger(__name__)


class InputGenerationFailed(FFmpegFailed):
    """FFmpeg could not make the synthetic input; the job cannot start on this worker."""


class InputCache:
    """Generated inputs in ``directory``, made on first request.

    Concurrent requests for the same clip wait for one generation instead of
    racing; requests for different clips run in parallel. Several agents may
    share the directory: each writes its own temporary file and the rename is
    atomic, so the worst case is generating a clip twice.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._locks: dict[str, trio.Lock] = {}

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
            if await trio.Path(final).is_file():
                return final
            await trio.Path(self.directory).mkdir(parents=True, exist_ok=True)
            # Ends in .mp4 so a leftover is recognisable; never matches a final name.
            partial = final.with_name(f".{final.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial.mp4")
            log.info("generating test input %s", final.name)
            try:
                argv = test_input_argv(ffmpeg, width, height, fps, duration, str(partial))
                result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
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
            return final
