"""Wire types shared by the master, the worker and the CLI.

Every message of the protocol (see "The wire protocol" in docs/architecture.rst)
is an attrs class here. JSON goes in through ``X.from_json(dict)`` and out
through ``x.to_json()``; both are built on one cattrs converter so that the
rules hold everywhere:

* unknown fields are ignored (the Go master and agent add fields freely);
* times are RFC 3339, read with nanoseconds and any offset, written in UTC;
* statuses accept the Go synonyms ``queued``/``running``/``assigned``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Any, ClassVar, TypeVar

import attrs
import cattrs

__all__ = [
    "AgentEvent",
    "Engine",
    "FailureReason",
    "HeartbeatReply",
    "HeartbeatReport",
    "Job",
    "JobAttempt",
    "JobProgress",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "LiveProgress",
    "MAX_ATTEMPT_ERROR_CHARS",
    "MAX_RESULT_LOG_BYTES",
    "Node",
    "NodeRegistered",
    "NodeRegistration",
    "Priority",
    "Queue",
    "ResultAck",
    "format_time",
    "log_tail",
    "parse_time",
    "utcnow",
]


class JobStatus(str, enum.Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    PAUSED = "paused"

    @classmethod
    def _missing_(cls, value: object) -> JobStatus | None:
        return _STATUS_SYNONYMS.get(str(value).lower())

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


_STATUS_SYNONYMS = {
    "queued": JobStatus.PENDING,
    "running": JobStatus.PROCESSING,
    "assigned": JobStatus.PROCESSING,
    "cancelled": JobStatus.CANCELED,
}


class FailureReason(str, enum.Enum):
    USER_ERROR = "user_error"
    INPUT_ERROR = "input_error"
    CAPABILITY_MISMATCH = "capability_mismatch"
    RUNTIME_ERROR = "runtime_error"
    NETWORK_ERROR = "network_error"
    TIMEOUT = "timeout"
    PLATFORM_ERROR = "platform_error"
    RESOURCE_ERROR = "resource_error"
    # The encoder's output stopped advancing (--stall-timeout); retried like a platform error.
    STALLED = "stalled"


class Engine(str, enum.Enum):
    AUTO = "auto"
    FFMPEG = "ffmpeg"
    GSTREAMER = "gstreamer"


class _Ranked(str, enum.Enum):
    """Members listed first are dispatched first."""

    @property
    def rank(self) -> int:
        return list(type(self)).index(self)


class Queue(_Ranked):
    """Queues in dispatch order: live jobs first, batch jobs last."""

    LIVE = "live"
    DEFAULT = "default"
    BATCH = "batch"


class Priority(_Ranked):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


# --- times -------------------------------------------------------------------

_FRACTION = re.compile(r"\.(\d+)")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_time(text: str) -> dt.datetime:
    """Read an RFC 3339 time as Go writes it.

    Go writes up to nine fractional digits and ``Z`` or ``+hh:mm``; Python keeps
    microseconds, so the fraction is cut to six digits.

    Raises:
        ValueError: the text is not an RFC 3339 time.
    """
    text = text.strip().replace("z", "Z")
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset; RFC 3339 needs one")
    return value


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


# --- the converter -----------------------------------------------------------

_converter = cattrs.Converter(omit_if_default=False)
_converter.register_structure_hook(dt.datetime, lambda value, _: parse_time(value))
_converter.register_unstructure_hook(dt.datetime, format_time)
_converter.register_unstructure_hook_func(
    lambda cls: isinstance(cls, type) and issubclass(cls, enum.Enum), lambda member: member.value
)

_T = TypeVar("_T")


def _from_json(cls: type[_T], data: Any) -> _T:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    known = {a.name for a in attrs.fields(cls)}  # type: ignore[arg-type]
    # JSON null means "not set": let the attrs default apply.
    present = {k: v for k, v in data.items() if k in known and v is not None}
    try:
        return _converter.structure(present, cls)
    except cattrs.BaseValidationError as exc:
        detail = "; ".join(cattrs.transform_error(exc))
        raise ValueError(f"invalid {cls.__name__}: {detail}") from None


class _Wire:
    """Mix-in giving an attrs class its JSON form."""

    @classmethod
    def from_json(cls: type[_T], data: Any) -> _T:
        """Build from decoded JSON.

        Raises:
            ValueError: a field has the wrong type or value; the message names it.
        """
        return _from_json(cls, data)

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = _converter.unstructure(self)
        return result


# --- messages ----------------------------------------------------------------


@attrs.frozen
class LiveProgress(_Wire):
    """How a running job's encode goes, from its last progress report: what ``jobs status`` shows.

    ``speed`` is media seconds per wall-clock second; ``out_time_s`` the media
    seconds encoded so far.
    """

    fps: float = 0.0
    speed: float = 0.0
    bitrate_kbps: float = 0.0
    out_time_s: float = 0.0
    # ``JobProgress.stage`` of that report: ``prefetched`` while the job waits for a slot on its node.
    stage: str = ""


@attrs.define
class Job(_Wire):
    id: str
    scenario: str
    sequence_number: int = 0
    confidence: str = "auto"
    engine: Engine = Engine.AUTO
    parameters: dict[str, Any] = attrs.field(factory=dict)
    status: JobStatus = JobStatus.PENDING
    queue: Queue = Queue.DEFAULT
    priority: Priority = Priority.MEDIUM
    progress: float = 0.0
    node_id: str = ""
    node_name: str = ""
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    retry_count: int = 0
    max_retries: int = 3
    error: str = ""
    failure_reason: str = ""
    logs: str = ""
    # The last result's metrics (duration, bandwidth_mbps, fps, ...), kept for the CLI and reports.
    metrics: dict[str, Any] = attrs.field(factory=dict)
    # Times a node handed the job back unstarted; past a few, a hand-back counts as a retry.
    handbacks: int = 0
    # Why a pending job is not running yet ("waiting: no node offers nvenc"), worked out
    # by the master over the live nodes each time the job is read; never stored.
    waiting: str = ""
    # The last progress report of the job's current or latest attempt; None before the first.
    live: LiveProgress | None = None


@attrs.define
class JobRequest(_Wire):
    """Body of ``POST /jobs``."""

    scenario: str
    confidence: str = "auto"
    engine: Engine = Engine.AUTO
    parameters: dict[str, Any] = attrs.field(factory=dict)
    queue: Queue = Queue.DEFAULT
    priority: Priority = Priority.MEDIUM


@attrs.define
class JobResult(_Wire):
    """Body of ``POST /results``: what a worker says about a job it ran."""

    job_id: str
    node_id: str
    status: JobStatus
    progress: float = 0.0
    metrics: dict[str, Any] = attrs.field(factory=dict)
    error: str = ""
    failure_reason: str = ""
    logs: str = ""
    completed_at: dt.datetime = attrs.field(factory=utcnow)
    # Extension: the worker claimed the job but never started it (draining, say).
    # The error text still says "not started" for masters that only read that.
    not_started: bool = False

    @classmethod
    def failure(
        cls, job: Job, node_id: str, reason: FailureReason, error: str, **fields: Any
    ) -> JobResult:
        return cls(
            job_id=job.id,
            node_id=node_id,
            status=JobStatus.FAILED,
            failure_reason=reason.value,
            error=error,
            **fields,
        )


# FFmpeg's last lines say why a job failed; 64 KiB holds hundreds of them, and a
# thousand jobs' logs in one page of GET /jobs stay under 64 MB.
MAX_RESULT_LOG_BYTES = 64 * 1024


def log_tail(logs: str, limit: int = MAX_RESULT_LOG_BYTES) -> str:
    """The end of ``logs`` that fits in ``limit`` bytes of UTF-8: where an encoder says what went wrong.

    A character cut in half at the start is dropped, so the tail is always valid text.
    """
    encoded = logs.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return logs
    return encoded[-limit:].decode("utf-8", "ignore")


# An attempt's error as its history keeps it: errors say what failed in their first
# line; the whole encoder log of the last attempt stays on the job.
MAX_ATTEMPT_ERROR_CHARS = 2048


@attrs.define
class JobAttempt(_Wire):
    """One run of a job on a node, from its claim to its end: an entry of ``GET /jobs/{id}/attempts``.

    ``outcome`` is the status the node's result gave (``completed``, ``failed``,
    ``canceled``), the operator's action that ended it (``canceled``, ``paused``),
    :attr:`HANDED_BACK` (the node never started it) or :attr:`LOST` (the master
    took the lease back: the node went silent, restarted, stopped, was deleted or
    no longer listed the job). A failure the master retried is still ``failed``.
    """

    HANDED_BACK: ClassVar[str] = "handed back"
    LOST: ClassVar[str] = "lost"

    # 1 for a job's first attempt; numbers go on across an operator's retry.
    number: int
    node_id: str
    node_name: str = ""
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    outcome: str = ""
    failure_reason: str = ""
    error: str = ""

    @classmethod
    def ended(
        cls, job: Job, number: int, now: dt.datetime, outcome: str, *, failure_reason: str = "", error: str = ""
    ) -> JobAttempt:
        """The attempt ``job`` (still as its node held it) made, ended ``now``; the error cut to
        :data:`MAX_ATTEMPT_ERROR_CHARS`, ending in an ellipsis."""
        if len(error) > MAX_ATTEMPT_ERROR_CHARS:
            error = error[: MAX_ATTEMPT_ERROR_CHARS - 1] + "…"
        return cls(
            number=number, node_id=job.node_id, node_name=job.node_name, started_at=job.started_at,
            ended_at=now, outcome=outcome, failure_reason=failure_reason, error=error,
        )


@attrs.define
class ResultAck(_Wire):
    """Answer to ``POST /results``: ``success``, or ``retrying`` with the count."""

    status: str
    retry: int = 0
    max_retries: int = 0


@attrs.define
class NodeRegistration(_Wire):
    """Body of ``POST /nodes/register``."""

    address: str
    type: str = "server"
    cpu_threads: int = 1
    cpu_model: str = ""
    has_gpu: bool = False
    gpu_type: str = ""
    gpu_capabilities: list[str] = attrs.field(factory=list)
    ram_total_bytes: int = 0
    labels: dict[str, str] = attrs.field(factory=dict)
    # Extension: jobs this node still answers for after a restart (results it has not
    # delivered yet); the master keeps their leases and hands back every other.
    active_job_ids: list[str] = attrs.field(factory=list)
    # Extension: the token of the node's previous run, proving that this is the same node.
    node_token: str = attrs.field(default="", repr=False)


@attrs.define
class NodeRegistered(_Wire):
    """Extension answer to a registration: the node, and the token for its node-scoped calls.

    The token is sent as ``Authorization: Bearer`` on claims, heartbeats,
    progress, results and the event channel; only its hash is stored. A master
    without the extension (the Go one) sends no token.
    """

    node: Node
    node_token: str = attrs.field(default="", repr=False)

    @classmethod
    def from_json(cls, data: Any) -> NodeRegistered:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object for a registration answer, got {type(data).__name__}")
        token = data.get("node_token")
        return cls(node=Node.from_json(data), node_token=token if isinstance(token, str) else "")

    def to_json(self) -> dict[str, Any]:
        return {**self.node.to_json(), "node_token": self.node_token}


@attrs.define
class Node(_Wire):
    id: str
    address: str
    type: str = "server"
    cpu_threads: int = 1
    cpu_model: str = ""
    has_gpu: bool = False
    gpu_type: str = ""
    gpu_capabilities: list[str] = attrs.field(factory=list)
    ram_total_bytes: int = 0
    labels: dict[str, str] = attrs.field(factory=dict)
    status: str = "available"
    current_job_id: str = ""
    active_job_ids: list[str] = attrs.field(factory=list)
    max_concurrent_jobs: int = 1
    registered_at: dt.datetime | None = None
    last_heartbeat: dt.datetime | None = None
    # Runs of the agent process under this name; each registration starts a new one.
    incarnation: int = 1
    # Drained by the operator: given no jobs until undrained, across restarts and offline spells.
    draining: bool = False


@attrs.define
class HeartbeatReport(_Wire):
    """Extension body of ``POST /nodes/{id}/heartbeat``; the Go master ignores it."""

    active_job_ids: list[str] = attrs.field(factory=list)
    max_concurrent_jobs: int = 1
    cpu_load_percent: float = 0.0


@attrs.define
class HeartbeatReply(_Wire):
    """Extension answer to a heartbeat: a cancel channel that needs no websocket."""

    cancel_job_ids: list[str] = attrs.field(factory=list)
    drain: bool = False


@attrs.define
class JobProgress(_Wire):
    """Extension body of ``POST /jobs/{id}/progress``.

    ``stage`` tells a job held by the node but waiting for a slot
    (``prefetched``) from one whose encoder runs (``encoding``); "" from an
    agent that does not say.
    """

    PREFETCHED: ClassVar[str] = "prefetched"
    ENCODING: ClassVar[str] = "encoding"

    node_id: str
    progress: float
    fps: float = 0.0
    speed: float = 0.0
    bitrate_kbps: float = 0.0
    out_time_s: float = 0.0
    stage: str = ""


@attrs.define
class AgentEvent(_Wire):
    """Extension message of ``WS /nodes/{id}/events``, master to agent.

    ``type`` stays a plain string: an agent ignores types it does not know, so
    a newer master can add some.
    """

    JOB_AVAILABLE: ClassVar[str] = "job_available"
    CANCEL: ClassVar[str] = "cancel"
    DRAIN: ClassVar[str] = "drain"

    type: str
    job_id: str = ""

    @classmethod
    def job_available(cls) -> AgentEvent:
        """Work is queued: an idle agent should claim now instead of at its next poll."""
        return cls(type=cls.JOB_AVAILABLE)

    @classmethod
    def cancel(cls, job_id: str) -> AgentEvent:
        """Stop this job: canceled, paused or timed out on the master, or leased elsewhere."""
        return cls(type=cls.CANCEL, job_id=job_id)

    @classmethod
    def drain(cls) -> AgentEvent:
        """Finish running jobs and claim no more."""
        return cls(type=cls.DRAIN)
