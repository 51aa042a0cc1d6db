"""Hardware video encoders (NVENC, Quick Sync, VA-API): what they need, and which work here.

An FFmpeg build lists ``h264_nvenc`` whether or not the machine has an NVIDIA
card, so listing encoders proves nothing. Each candidate is instead asked to
encode one frame; only those that succeed are offered to jobs.

Detection runs once, at agent start, once the guardian runs (so a probe dies
with the agent) and before registration (which lists the encoders): the
probes start together and the slowest bounds the wait, so the start-up delay
is one short FFmpeg run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import trio

from ...hardware import NVENC, QSV, VAAPI
from ..guardian import Guardian
from ..processes import capture_child

__all__ = ["VENDORS", "HardwareEncoder", "candidates", "detect_hardware_encoders", "probe_argv"]

log = logging.getLogger(__name__)

# A probe that takes longer than this is a driver hanging, not a working encoder.
PROBE_TIMEOUT_S = 15.0


@attrs.frozen
class _Vendor:
    """How FFmpeg reaches one vendor's encoders.

    ``device_args`` open the device before the input; ``upload`` ends the
    filter chain by moving frames to the device (empty when the encoder takes
    frames from system memory).
    """

    device_args: tuple[str, ...]
    upload: str
    encoders: dict[str, str]


VENDORS: dict[str, _Vendor] = {
    NVENC: _Vendor((), "", {"h264": "h264_nvenc", "h265": "hevc_nvenc"}),
    QSV: _Vendor(
        ("-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"),
        "format=nv12,hwupload=extra_hw_frames=64",
        {"h264": "h264_qsv", "h265": "hevc_qsv", "vp9": "vp9_qsv"},
    ),
    # The first render node: the one a single-GPU machine has.
    VAAPI: _Vendor(
        ("-vaapi_device", "/dev/dri/renderD128"),
        "format=nv12,hwupload",
        {"h264": "h264_vaapi", "h265": "hevc_vaapi", "vp9": "vp9_vaapi"},
    ),
}


@attrs.frozen
class HardwareEncoder:
    """One vendor's encoder for one codec: ``HardwareEncoder("nvenc", "h264")`` is ``h264_nvenc``."""

    vendor: str
    codec: str

    @property
    def name(self) -> str:
        """FFmpeg's name for the encoder."""
        return VENDORS[self.vendor].encoders[self.codec]

    @property
    def device_args(self) -> tuple[str, ...]:
        return VENDORS[self.vendor].device_args

    @property
    def upload(self) -> str:
        return VENDORS[self.vendor].upload


def candidates() -> list[HardwareEncoder]:
    """Every vendor and codec pair FFmpeg might offer, in vendor order."""
    return [HardwareEncoder(vendor, codec) for vendor, setup in VENDORS.items() for codec in setup.encoders]


def probe_argv(ffmpeg: str, encoder: HardwareEncoder) -> list[str]:
    """One 256x256 frame through ``encoder`` to the null muxer: exit 0 means it works here."""
    filters = ",".join(f for f in ("format=yuv420p", encoder.upload) if f)
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *encoder.device_args,
        "-f", "lavfi", "-i", "color=c=black:s=256x256:r=1", "-frames:v", "1",
        "-vf", filters, "-c:v", encoder.name, "-f", "null", "-",
    ]


async def detect_hardware_encoders(
    ffmpeg: str,
    wanted: Sequence[HardwareEncoder] | None = None,
    *,
    timeout: float = PROBE_TIMEOUT_S,
    guardian: Guardian | None = None,
) -> tuple[HardwareEncoder, ...]:
    """The encoders of ``wanted`` (default: all candidates) that encode a frame on this machine.

    All probes run at once; ``guardian`` kills them should the agent die
    meanwhile. A probe that cannot start, fails or outlives ``timeout`` (it
    is killed) counts as absent; nothing here raises.
    """
    wanted = candidates() if wanted is None else wanted
    works = dict.fromkeys(wanted, False)

    async def probe(encoder: HardwareEncoder) -> None:
        with trio.move_on_after(timeout) as timer:
            try:
                result = await capture_child(probe_argv(ffmpeg, encoder), guardian=guardian)
            except OSError as exc:
                log.debug("cannot probe %s: %s", encoder.name, exc)
                return
        if timer.cancelled_caught:
            log.debug("hardware encoder %s: probe timed out", encoder.name)
        elif result.returncode == 0:
            works[encoder] = True
        else:
            reason = result.stderr.decode(errors="replace").strip()
            log.debug("hardware encoder %s unavailable: %s", encoder.name, reason)

    async with trio.open_nursery() as nursery:
        for encoder in wanted:
            nursery.start_soon(probe, encoder)
    return tuple(encoder for encoder, ok in works.items() if ok)
