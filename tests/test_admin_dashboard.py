"""The dashboard: per-topic numbers, the throughput chart, live and stale workers, its fragment."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest
from django.utils import timezone

from jobqueue import engine
from jobqueue.admin.dashboard_views import _nice_ceiling, chart
from jobqueue.dashboard import throughput
from jobqueue.models import Job

from .test_admin_support import DASHBOARD, DASHBOARD_FRAGMENT, set_status, superuser_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def root():
    return superuser_client()


def finished(topic: str, status: str, minutes_ago: float, n: int = 1) -> None:
    when = timezone.now() - dt.timedelta(minutes=minutes_ago)
    for _ in range(n):
        set_status(Job.objects.enqueue(topic, {}), status, finished_at=when, started_at=when)


def topic_row(html: str, topic: str) -> str:
    match = re.search(rf'<tr class="jq-topic-row" data-topic="{re.escape(topic)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {topic}"
    return match.group(1)


def cells(row: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>|\s+", " ", c).split()[0] if c.strip() else ""
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


def test_topic_numbers(root):
    for _ in range(3):
        Job.objects.enqueue("echo", {})
    set_status(Job.objects.enqueue("echo", {}), "running")
    finished("echo", "succeeded", 30, n=4)
    finished("echo", "failed", 90, n=2)
    finished("echo", "failed", 60 * 30)  # more than 24 hours ago: not counted

    html = root.get(DASHBOARD).content.decode()
    queued, running, succeeded, failed = cells(topic_row(html, "echo"))[:4]
    assert (queued, running, succeeded, failed) == ("3", "1", "4", "2")


def test_throughput_per_minute_and_outcome():
    now = timezone.now().replace(second=30, microsecond=0)  # mid-minute: no boundary to cross
    for status, seconds_ago, n in (
        ("succeeded", 10, 3),
        ("failed", 20, 1),
        ("cancelled", 300, 1),
        ("succeeded", 75 * 60, 1),
    ):  # the last one is outside the hour
        when = now - dt.timedelta(seconds=seconds_ago)
        for _ in range(n):
            set_status(Job.objects.enqueue("echo", {}), status, finished_at=when, started_at=when)

    tp = throughput(now=now)
    assert tp.minutes == 60
    assert (tp.series["succeeded"][-1], tp.series["failed"][-1]) == (3, 1)
    assert tp.series["cancelled"][-6] == 1
    assert tp.totals == {"succeeded": 3, "failed": 1, "cancelled": 1}
    assert tp.peak == 4


def test_chart_is_inline_svg_with_one_bar_per_outcome_and_minute(root):
    finished("echo", "succeeded", 0.2, n=3)
    finished("echo", "failed", 0.2)
    finished("echo", "succeeded", 10)

    html = root.get(DASHBOARD).content.decode()
    svg = html[html.index('<svg class="jq-svg"') : html.index("</svg>", html.index('<svg class="jq-svg"'))]
    assert svg.count('class="jq-bar jq-bar-succeeded"') == 2
    assert svg.count('class="jq-bar jq-bar-failed"') == 1
    assert "<script" not in html.split("<body", 1)[1].replace('<script src="/static/', "")  # no inline script
    assert 'src="/static/jobqueue/dashboard.js"' in html
    assert "http://" not in svg and "https://" not in svg


def test_chart_scales_stack_to_the_peak():
    tp = throughput()
    tp.series["succeeded"][59] = 30
    tp.series["failed"][59] = 10
    geometry = chart(tp)
    assert geometry["ymax"] == 50
    bars = [b for b in geometry["bars"]]
    assert [b["status"] for b in bars] == ["succeeded", "failed"]
    plot_h = geometry["base"] - geometry["top"]
    assert float(bars[0]["h"]) == pytest.approx(plot_h * 30 / 50, abs=0.1)
    assert float(bars[1]["y"]) + float(bars[1]["h"]) == pytest.approx(float(bars[0]["y"]), abs=0.1)  # stacked


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (120, 200), (500, 500)]
)
def test_nice_ceiling(value, ceiling):
    assert _nice_ceiling(value) == ceiling


def test_workers_with_heartbeat_slots_and_stale_flag(root, redis_client):
    job = set_status(Job.objects.enqueue("echo", {}), "running")
    engine.beat(
        "worker-live",
        {
            "host": "box-1",
            "pid": 41,
            "topics": ["echo"],
            "wanted": ["echo", "other"],
            "current": [str(job.pk)],
            "processed": 17,
            "started": time.time() - 300,
        },
    )
    assert engine.TopicLock("echo", token="t1", worker_id="worker-live").acquire()
    stale = {
        "host": "box-2",
        "pid": 7,
        "topics": [],
        "wanted": ["other"],
        "current": [],
        "processed": 3,
        "started": time.time() - 4000,
        "id": "worker-gone",
        "beat": time.time() - 120,
    }
    redis_client.hset(engine.workers_key(), "worker-gone", json.dumps(stale))

    html = root.get(DASHBOARD).content.decode()
    rows = re.findall(r'<tr class="jq-worker-row( jq-stale-row)?">(.*?)</tr>', html, re.S)
    by_id = {re.search(r'jq-mono">([^<]+)<', row).group(1): (flag, row) for flag, row in rows}
    live_flag, live = by_id["worker-live"]
    assert (
        not live_flag and "box-1" in live and "17" in live and f"/admin/jobqueue/job/{job.pk}/change/" in live
    )
    assert "echo" in live and "stale" not in live
    stale_flag, gone = by_id["worker-gone"]
    assert stale_flag and "stale" in gone
    assert re.search(r'jq-stat-n">1</span><span class="jq-stat-l">live workers', html)
    assert "worker-live" in topic_row(html, "echo")  # the topic's slot holder


def test_fragment_is_the_refreshable_part(root):
    Job.objects.enqueue("echo", {})
    page = root.get(DASHBOARD + "?refresh=2").content.decode()
    assert 'data-fragment-url="/admin/jobqueue/job/dashboard/fragment/"' in page
    assert 'data-refresh-ms="2000"' in page

    fragment = root.get(DASHBOARD_FRAGMENT)
    assert "no-store" in fragment["Cache-Control"]
    html = fragment.content.decode()
    assert "<html" not in html and 'class="jq-svg"' in html and 'data-topic="echo"' in html


def test_dashboard_is_linked_from_the_app_index_and_job_list(root):
    assert 'href="/admin/jobqueue/job/dashboard/"' in root.get("/admin/jobqueue/").content.decode()
    assert 'href="/admin/jobqueue/job/dashboard/"' in root.get("/admin/jobqueue/job/").content.decode()


def test_dashboard_survives_redis_being_down(root, settings):
    Job.objects.enqueue("echo", {})
    settings.JOBQUEUE = {**settings.JOBQUEUE, "CACHE_ALIAS": "default", "REDIS_URL": "redis://127.0.0.1:1/0"}
    engine.reset_clients()
    try:
        response = root.get(DASHBOARD)
        topics = root.get("/admin/jobqueue/topic/")
    finally:
        settings.JOBQUEUE = {k: v for k, v in settings.JOBQUEUE.items() if k != "REDIS_URL"}
        engine.reset_clients()
    assert response.status_code == 200 and "Redis is unreachable" in response.content.decode()
    assert cells(topic_row(response.content.decode(), "echo"))[0] == "1"
    assert topics.status_code == 200 and "Redis unavailable" in topics.content.decode()


@pytest.mark.parametrize("peak", [1, 2, 3, 7, 10, 17, 45, 160, 999])
def test_chart_axis_labels_are_whole_numbers(peak):
    tp = throughput()
    tp.series["succeeded"][0] = peak
    labels = [g["label"] for g in chart(tp)["grid"]]
    assert labels[0] == "0" and int(labels[-1]) >= peak
    steps = {int(b) - int(a) for a, b in zip(labels, labels[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() >= 1, labels
