"""The dashboard's plain parts: signed sessions, the feed of accepted writes, and what pages show."""

from __future__ import annotations

import base64
import datetime as dt
import json

import trio

from agent.master.store import StoreCounts
from agent.master.ui.feed import HISTORY_POINTS, THROUGHPUT_WINDOW_S, FarmFeed, ProgressPoint
from agent.master.ui.sessions import SESSION_LIFETIME_S, Session, SessionSigner
from agent.master.ui.views import FarmTotals, JobView, NodeView, Sparkline, ago, prefetched_ids
from agent.models import HeartbeatReport, Job, JobProgress, JobResult, JobStatus, LiveProgress, Node, utcnow


def test_a_signed_session_reads_back_until_it_expires() -> None:
    """dumps/loads round-trips; past its lifetime the cookie is refused."""
    signer = SessionSigner.for_key("key")
    session = Session.new(operator=True, now=1000.0)
    value = signer.dumps(session)
    assert signer.loads(value, now=1000.0) == session
    assert signer.loads(value, now=1000.0 + SESSION_LIFETIME_S) is None


def test_a_changed_or_foreign_cookie_is_refused() -> None:
    """A cookie edited to claim a login, or signed under another key, is no session."""
    signer = SessionSigner.for_key("key")
    value = signer.dumps(Session.new(operator=False))
    payload, _, mac = value.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["operator"] = True
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert signer.loads(f"{forged}.{mac}") is None
    assert SessionSigner.for_key("another key").loads(value) is None
    assert signer.loads("garbage") is None and signer.loads("a.b") is None


def test_the_csrf_token_is_the_session_s_own() -> None:
    """Each new session has a fresh token, and only it matches."""
    first, second = Session.new(operator=True), Session.new(operator=True)
    assert first.csrf != second.csrf
    assert first.csrf_matches(first.csrf) and not first.csrf_matches(second.csrf) and not first.csrf_matches("")


def test_heartbeats_progress_and_results_are_kept_as_the_routes_hand_them_over() -> None:
    """CPU load (when measured), a bounded progress history and completed results."""
    feed = FarmFeed()
    feed.note_heartbeat("n1", HeartbeatReport(cpu_load_percent=42.5))
    feed.note_heartbeat("n2", HeartbeatReport(cpu_load_percent=0.0))
    for i in range(HISTORY_POINTS + 10):
        feed.note_progress("j1", JobProgress(node_id="n1", progress=i / 10), at=1000.0 + i)
    feed.note_result(JobResult(job_id="j1", node_id="n1", status=JobStatus.COMPLETED), at=1000.0)
    feed.note_result(JobResult(job_id="j2", node_id="n1", status=JobStatus.FAILED), at=1000.0)
    assert feed.cpu_load == {"n1": 42.5}
    history = feed.history("j1")
    assert len(history) == HISTORY_POINTS and history[-1].percent == (HISTORY_POINTS + 9) / 10
    assert feed.history("j3") == []
    assert feed.completed_recently(1000.0) == 1
    assert feed.completed_recently(1000.0 + THROUGHPUT_WINDOW_S + 1) == 0


async def test_a_waiting_page_wakes_on_the_next_change() -> None:
    """wait_for_change returns at once when behind, else on the next note."""
    feed = FarmFeed()
    feed.note_change()
    assert await feed.wait_for_change(0) == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.wait_for_change, 1)
        await trio.sleep(0)
        feed.note_change()
    assert feed.version == 2


def test_job_actions_follow_the_scheduler_s_rules() -> None:
    """Buttons offered per status match what the scheduler allows."""
    offered = {status: JobView.of(Job(id="j", scenario="720p30-h264", status=status)).actions for status in JobStatus}
    assert offered == {
        JobStatus.PENDING: ["pause", "cancel"], JobStatus.PROCESSING: ["pause", "cancel"],
        JobStatus.PAUSED: ["resume", "cancel"], JobStatus.FAILED: ["retry"], JobStatus.CANCELED: ["retry"],
        JobStatus.COMPLETED: [],
    }


def test_farm_totals_count_online_slots_and_running_encoders() -> None:
    """Offline nodes' slots do not count; fps and output bandwidth add up over running jobs."""
    nodes = [
        Node(id="a", address="a:1", status="busy", active_job_ids=["j1", "j2"], max_concurrent_jobs=2),
        Node(id="b", address="b:1", status="available", max_concurrent_jobs=4),
        Node(id="c", address="c:1", status="offline", max_concurrent_jobs=8),
    ]
    running = [
        Job(id="j1", scenario="s", status=JobStatus.PROCESSING, live=LiveProgress(fps=30, speed=2.0, bitrate_kbps=1000)),
        Job(id="j2", scenario="s", status=JobStatus.PROCESSING),
    ]
    counts = StoreCounts(jobs={"processing": 2, "pending": 3}, nodes={}, pending_by_queue={"default": 3})
    totals = FarmTotals.of(counts, nodes, running, completed_recently=5)
    assert (totals.pending, totals.nodes_online, totals.nodes, totals.slots_used, totals.slots) == (3, 2, 3, 2, 6)
    assert totals.fps == 30 and totals.output_mbps == 2.0 and totals.completed_recently == 5


def test_prefetched_jobs_hold_no_slot_in_the_totals_or_the_nodes_table() -> None:
    """A job the node holds while it waits for a slot there is counted apart: 2/2 slots used, +1 prefetched, not 3/2."""
    node = Node(id="a", address="a:1", status="busy", active_job_ids=["j1", "j2", "j3"], max_concurrent_jobs=2)
    running = [
        Job(id="j1", scenario="s", status=JobStatus.PROCESSING, live=LiveProgress(fps=30, stage="encoding")),
        Job(id="j2", scenario="s", status=JobStatus.PROCESSING),
        Job(id="j3", scenario="s", status=JobStatus.PROCESSING, live=LiveProgress(stage="prefetched")),
    ]
    counts = StoreCounts(jobs={"processing": 3}, nodes={}, pending_by_queue={})
    totals = FarmTotals.of(counts, [node], running, completed_recently=0)
    assert (totals.slots_used, totals.slots, totals.prefetched) == (2, 2, 1)
    view = NodeView.of(node, None, utcnow(), prefetched_ids(running))
    assert (view.slots_used, view.prefetched) == (2, 1)


def test_a_progress_history_is_drawn_inside_the_chart() -> None:
    """Two points or more make polylines within 600x120; fewer make no chart."""
    points = [ProgressPoint(at=100.0 + i, percent=i * 10.0, fps=20.0 + i, speed=1.0) for i in range(11)]
    chart = Sparkline.of(points)
    assert chart is not None and chart.seconds == 10 and chart.max_fps == 30
    for line in (chart.percent, chart.fps):
        xs, ys = zip(*(map(float, pair.split(",")) for pair in line.split()))
        assert min(xs) == 0 and max(xs) == 600 and 0 <= min(ys) and max(ys) <= 120
    assert Sparkline.of(points[:1]) is None


def test_times_read_as_how_long_ago() -> None:
    """Seconds, minutes, hours, days; never for none."""
    now = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
    assert [ago(now - dt.timedelta(seconds=s), now) for s in (5, 125, 7300, 200000)] == [
        "5 s ago", "2 min ago", "2 h ago", "2 d ago",
    ]
    assert ago(None, now) == "never"
