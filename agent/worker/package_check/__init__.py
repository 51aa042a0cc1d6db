"""A ladder's package checked the way a player reads it: manifest, files, and a full decode of every rung.

What viewers get from a ladder job is a package (an HLS master playlist and
its media playlists, a DASH MPD, or one file per rung), and a player trusts
what it declares. :func:`check_package` reads the package as a player would
and returns one plain sentence per problem (empty: a player plays it and can
switch rungs):

* the manifest: an HLS master playlist whose variants each give
  ``BANDWIDTH``, ``AVERAGE-BANDWIDTH``, ``RESOLUTION``, ``CODECS`` and
  ``FRAME-RATE`` (and the audio group they share), video-on-demand media
  playlists with their ``EXT-X-MAP`` init sections; or a static DASH MPD whose
  Representations give width, height, frame rate, bandwidth and codecs, with a
  ``SegmentTemplate`` (a ``SegmentTimeline`` or a fixed duration);
* every file the manifest names exists and is not empty;
* every rung decoded in full by FFmpeg: its size, frame rate and duration
  against the ladder and against what the manifest declares (``CODECS``
  against the decoded codec and H.264 profile; HLS bandwidths against the
  segments' measured peak and average, as Apple's validator does);
* keyframes at the same times in every rung, and every segment starting on a
  keyframe at the same time in every rung: players switch rungs at segment
  boundaries, and a segment that starts elsewhere shows a broken picture or a
  jump.

Keyframes are read from the decode the check makes anyway: FFmpeg's
``showinfo`` filter prints each decoded frame's time and key flag, so one
decode per rung gives sizes, frame count, duration, decode errors and the
keyframe times together (``-skip_frame nokey`` would be cheaper but decodes
nothing else, and reading packet flags needs ffprobe, which the
``imageio-ffmpeg`` wheel does not ship). Times are counted from each rung's
first frame. A DASH Representation is decoded through a scratch HLS media
playlist that lists its init section and segments by absolute path, so both
kinds are decoded by the same FFmpeg demuxer, from exactly the files the
manifest names.

General layout: :mod:`.model` holds the data the other modules trade;
:mod:`.hls`, :mod:`.dash` and :mod:`.files` read a package (plain code, with
:mod:`.manifest` what the first two share); :mod:`.decode` runs the decodes as
child processes through :func:`~agent.worker.processes.run_child` (own
session, guarded, killed on cancel), one after the other; :mod:`.compare`
holds the comparisons (plain code); :mod:`.check` puts them together.
The names in ``__all__`` below are the package's surface; the modules'
other names serve one another.
"""

from .check import check_package
from .compare import (
    BANDWIDTH_TOLERANCE,
    DURATION_TOLERANCE_S,
    FPS_TOLERANCE,
    Pair,
    alignment_problems,
    match_rungs,
    rung_problems,
)
from .dash import read_dash
from .decode import decode_audio, decode_video
from .files import read_files
from .hls import measure_hls_bitrate, read_hls
from .model import Bitrate, Declared, Decoded, DecodeFailed, ExpectedRung, PackageKind, Reading, Segment, Track

__all__ = [
    "BANDWIDTH_TOLERANCE",
    "DURATION_TOLERANCE_S",
    "FPS_TOLERANCE",
    "Bitrate",
    "DecodeFailed",
    "Declared",
    "Decoded",
    "ExpectedRung",
    "PackageKind",
    "Pair",
    "Reading",
    "Segment",
    "Track",
    "alignment_problems",
    "check_package",
    "decode_audio",
    "decode_video",
    "match_rungs",
    "measure_hls_bitrate",
    "read_dash",
    "read_files",
    "read_hls",
    "rung_problems",
]
