"""What ``local`` runs: its options checked and turned into one job request per job.

Plain code over the file system (which inputs exist, whether the output
directory can be written), no trio and no processes, so that a bad option
stops ``local`` before a master or an encoder starts, and the command line
can show these defaults without importing the roles.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import attrs

from agent.models import Job, JobRequest
from agent.scenarios import PARAMETERS, EncodeSpec, JobRejected, build_spec

__all__ = [
    "DEFAULT_OUTPUT_DIR", "GENERATED_DURATION_S", "GENERATED_JOBS", "MEDIA_EXTENSIONS", "LocalPlan", "LocalRun",
    "OptionRejected", "media_files", "output_name", "writable_dir",
]

# What a directory given to --input contributes: the files directly in it with these extensions, in any case.
MEDIA_EXTENSIONS = (".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm")
# Where the outputs of --input files go unless --output-dir says: beside the user, not in a cache.
DEFAULT_OUTPUT_DIR = Path("ffrtmp-output")
# A run on the generated clip: how many jobs and how long each, unless --jobs / --duration say.
GENERATED_JOBS = 4
GENERATED_DURATION_S = 5.0
# What a worker accepts in an output file name (agent/scenarios.py); anything else in a stem becomes "_".
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]|\.{2,}")


class OptionRejected(ValueError):
    """An option of ``local`` has a value no job could run with; the message names the flag and the value."""


@attrs.frozen
class LocalPlan:
    """A checked run: one request per job, and the directories the embedded worker is allowed.

    ``spec`` is the first job's; when it has no input, every job encodes the
    generated clip, which the progress line watches being made.
    """

    requests: list[JobRequest]
    input_dirs: list[Path]
    output_dir: Path | None
    spec: EncodeSpec


@attrs.define
class LocalRun:
    """What ``local`` was asked for, as its flags say; :meth:`plan` checks it and makes the jobs.

    ``jobs`` and ``duration`` are None when not given: a run on the generated
    clip then has :data:`GENERATED_JOBS` jobs of :data:`GENERATED_DURATION_S`,
    and an input is encoded whole. ``output_dir`` None is :data:`DEFAULT_OUTPUT_DIR`
    for input files, and the work dir for the generated clip's outputs.
    """

    scenario: str
    max_concurrent_jobs: int
    work_dir: Path
    jobs: int | None = None
    duration: float | None = None
    parameters: dict[str, Any] = attrs.field(factory=dict)
    ffmpeg: str = ""
    inputs: list[Path] = attrs.field(factory=list)
    output_dir: Path | None = None
    ladder_mode: str = "auto"

    def plan(self) -> LocalPlan:
        """Check every option and make each job's request, built as the worker will build it.

        ``--param input=PATH`` is taken as ``--input PATH``. The output
        directory is created here, so that a bad one stops the run before it starts.

        Raises:
            OptionRejected: a value no job could run with; the message starts
                with the flag and value to change (``--param bitrate=lots: ...``,
                ``--input clips: no media files directly in it ...``).
        """
        parameters = dict(self.parameters)
        inputs = list(self.inputs)
        if isinstance(parameters.get("input"), str) and "://" not in parameters["input"]:
            inputs.append(Path(parameters.pop("input")))
        if inputs and self.jobs is not None:
            raise OptionRejected(
                f"--jobs {self.jobs}: counts jobs on the generated clip; with --input each file is one job, "
                "so leave --jobs out"
            )
        if inputs and "input" in parameters:
            raise OptionRejected(f"--param input={parameters['input']}: with --input each job's input is its file")
        files = media_files(inputs)
        output_dir = self.output_dir or (DEFAULT_OUTPUT_DIR if files else None)
        if output_dir is not None:
            output_dir = writable_dir(output_dir)
        if files:
            input_dirs = sorted({file.parent for file in files})
            requests = [self._file_request(file, parameters, input_dirs, output_dir) for file in files]
            if "output" not in parameters:
                _check_distinct_outputs(requests)
            return LocalPlan(requests, input_dirs, output_dir, self._checked(requests[0], parameters, input_dirs,
                                                                             output_dir, files[0]))
        default = GENERATED_DURATION_S if "input" not in parameters else None
        request = self._request(parameters, duration=self.duration if self.duration is not None else default)
        spec = self._checked(request, parameters, [], output_dir)
        return LocalPlan([request] * (self.jobs or GENERATED_JOBS), [], output_dir, spec)

    def _request(self, parameters: dict[str, Any], **given: Any) -> JobRequest:
        """The job: the duration and input/output we give, then the ``--param`` values over them."""
        ours = {key: value for key, value in given.items() if value is not None}
        return JobRequest.from_json({"scenario": self.scenario, "parameters": {**ours, **parameters}})

    def _file_request(
        self, file: Path, parameters: dict[str, Any], input_dirs: list[Path], output_dir: Path | None
    ) -> JobRequest:
        """The job of one input file, its output named ``<stem>.<scenario>.<ext>`` in the output directory."""
        assert output_dir is not None  # input files always have one
        request = self._request(parameters, duration=self.duration, input=str(file))
        spec = self._checked(request, parameters, input_dirs, output_dir, file)
        if "output" in parameters:
            return request
        # A ladder's output is a package directory: <stem>.ladder.hls
        label, extension = ("ladder", f".{spec.ladder.package}") if spec.ladder else (self.scenario, spec.extension)
        request = self._request(parameters, duration=self.duration, input=str(file),
                                output=str(output_dir / output_name(file, label, extension)))
        self._checked(request, parameters, input_dirs, output_dir, file)
        return request

    def _checked(
        self, request: JobRequest, parameters: dict[str, Any], input_dirs: Sequence[Path],
        output_dir: Path | None, file: Path | None = None,
    ) -> EncodeSpec:
        job = Job(id="local", scenario=request.scenario, parameters=request.parameters)
        try:
            # The worker checks every address an input URL resolves to; so may we skip the literal check.
            return build_spec(job, input_dirs=input_dirs, output_dir=output_dir, allow_private_inputs=True)
        except JobRejected as exc:
            raise OptionRejected(f"{self._flag_for(exc.field, parameters, file, output_dir)}: {exc}") from None

    def _flag_for(self, field: str, parameters: dict[str, Any], file: Path | None, output_dir: Path | None) -> str:
        if field == "scenario":
            return f"--scenario {self.scenario}"
        key = field.split(".")[0]
        if key == "duration" and key not in parameters:
            return f"--duration {self.duration:g}" if self.duration is not None else "--duration"
        if key == "input" and file is not None:
            return f"--input {file}"
        if key == "output" and key not in parameters:
            return f"--output-dir {output_dir}"
        if key not in parameters:  # "parameters": keys we do not know
            key = next((each for each in parameters if each not in PARAMETERS), key)
        return f"--param {key}={parameters.get(key, '')}"


def _check_distinct_outputs(requests: list[JobRequest]) -> None:
    """Two inputs with one stem (clip.mov, clip.mkv) would write one output; say so rather than lose one."""
    seen: dict[str, str] = {}
    for request in requests:
        output, input_ = request.parameters.get("output"), request.parameters["input"]
        if output in seen:
            raise OptionRejected(
                f"--input {seen[output]} and --input {input_} would both write {output}; "
                "rename one, or run them with different --output-dir"
            )
        if output is not None:
            seen[output] = input_


def media_files(paths: Sequence[Path]) -> list[Path]:
    """The input files ``paths`` name, absolute and each once, in the order given.

    A file is taken as it is; a directory gives the files directly in it whose
    extension is in :data:`MEDIA_EXTENSIONS`, sorted by name.

    Raises:
        OptionRejected: a path is missing or unreadable, or a directory has no media files.
    """
    files: dict[Path, None] = {}
    for path in paths:
        flag = f"--input {path}"
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file())
            if not found:
                raise OptionRejected(
                    f"{flag}: no media files directly in this directory (looked for {', '.join(MEDIA_EXTENSIONS)})"
                )
        elif path.is_file():
            found = [path]
        elif path.exists():
            raise OptionRejected(f"{flag}: is not a file or a directory")
        else:
            raise OptionRejected(f"{flag}: no such file or directory")
        for file in found:
            if not os.access(file, os.R_OK):
                raise OptionRejected(f"--input {file}: cannot be read; check its permissions")
            files.setdefault(file.resolve())
    return list(files)


def output_name(file: Path, scenario: str, extension: str) -> str:
    """``<stem>.<scenario><extension>``, with what a worker refuses in a file name made ``_``.

    Example: ``output_name(Path("My clip.mov"), "720p30-h264", ".mp4") == "My_clip.720p30-h264.mp4"``.
    """
    stem = _UNSAFE_NAME.sub("_", file.stem).lstrip(".-")[:100] or "input"
    return _UNSAFE_NAME.sub("_", f"{stem}.{scenario.strip()}{extension}")


def writable_dir(path: Path) -> Path:
    """``path`` made absolute and created if needed.

    Raises:
        OptionRejected: it cannot be created, or this user cannot write into it.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionRejected(f"--output-dir {path}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OptionRejected(f"--output-dir {path}: is not writable by this user; choose another directory")
    return path.resolve()
