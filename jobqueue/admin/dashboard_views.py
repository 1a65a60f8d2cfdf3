"""The dashboard: a page of the admin (``admin/jobqueue/job/dashboard/``) and the fragment
its script fetches every few seconds to refresh itself in place.

The throughput chart is an inline SVG drawn here from numbers only: no CDN, no
charting library, and nothing a job wrote ever reaches its markup.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import dashboard
from ..models import JobStatus, Topic
from . import display

#: Default and bounds of the refresh interval (``?refresh=`` seconds).
REFRESH_SECONDS = 5
REFRESH_BOUNDS = (1, 300)
#: Stacking order of the chart, bottom to top.
OUTCOMES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _check(model_admin: Any, request: HttpRequest) -> None:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied


def _refresh_seconds(request: HttpRequest) -> int:
    try:
        value = int(request.GET.get("refresh", REFRESH_SECONDS))
    except ValueError:
        value = REFRESH_SECONDS
    return max(REFRESH_BOUNDS[0], min(REFRESH_BOUNDS[1], value))


def dashboard_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    _check(model_admin, request)
    refresh = _refresh_seconds(request)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": _("Job queue dashboard"),
        "subtitle": None,
        "refresh_ms": refresh * 1000,
        "fragment_url": reverse("admin:jobqueue_dashboard_fragment"),
        **dashboard_context(),
    }
    return TemplateResponse(request, "admin/jobqueue/dashboard.html", context)


def dashboard_fragment_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    _check(model_admin, request)
    response = TemplateResponse(request, "jobqueue/admin/dashboard_fragment.html", dashboard_context())
    response["Cache-Control"] = "no-store"
    return response


def dashboard_context(now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    topics = list(Topic.objects.order_by("name"))
    stats = dashboard.topic_stats([t.name for t in topics], with_recent=True, now=now)
    workers = dashboard.workers()
    owned = dashboard.holders_by_worker(stats.values())
    rows = []
    for topic in topics:
        item = stats[topic.name]
        rows.append(
            {
                "topic": topic,
                "stats": item,
                "url": reverse("admin:jobqueue_topic_change", args=[topic.pk]),
                "jobs_url": display.changelist_url("job", topic__name__exact=topic.name),
                "failed_url": display.changelist_url(
                    "job", topic__name__exact=topic.name, status__exact="failed"
                ),
                "queued": item.count(JobStatus.QUEUED),
                "running": item.count(JobStatus.RUNNING),
                "succeeded_24h": item.recent.get(JobStatus.SUCCEEDED, 0),
                "failed_24h": item.recent.get(JobStatus.FAILED, 0),
                "holders": display.holders(item.holders),
                "flow": display.flow(topic.flow_state(), topic.rate) if topic.flow_limits() else "",
            }
        )
    worker_rows = []
    for w in workers or []:
        worker_rows.append(
            {
                "id": w.get("id", ""),
                "host": w.get("host", ""),
                "pid": w.get("pid", ""),
                "slots": owned.get(w.get("id", ""), w.get("topics") or []),
                "wanted": w.get("wanted") or [],
                "current": [(pk, display.job_url(pk)) for pk in (w.get("current") or [])[:10]],
                "processed": w.get("processed", 0),
                "started": display.local_time(display.epoch(w.get("started"))),
                "beat": display.ago(w.get("age")),
                "stale": bool(w.get("stale")),
            }
        )
    tp = dashboard.throughput(now=now)
    return {
        "rows": rows,
        "workers": worker_rows,
        "redis_down": workers is None,
        "live_workers": sum(1 for w in worker_rows if not w["stale"]),
        "totals": {
            "queued": sum(r["queued"] for r in rows),
            "running": sum(r["running"] for r in rows),
            "succeeded_24h": sum(r["succeeded_24h"] for r in rows),
            "failed_24h": sum(r["failed_24h"] for r in rows),
        },
        "chart": chart(tp),
        "updated": display.local_time(now, "%H:%M:%S"),
    }


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 × 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * exponent >= value:
            return step * exponent
    return 10 * exponent


def _divisions(ymax: int) -> int:
    """Grid lines for a 1, 2 or 5 × 10^k axis so that every label is a whole number."""
    if ymax <= 5:
        return ymax
    leading = int(str(ymax)[0])
    return {1: 5, 2: 4, 5: 5}.get(leading, 5)


def chart(tp: dashboard.Throughput, width: int = 760, height: int = 220) -> dict[str, Any]:
    """Geometry of a stacked bar chart: one bar per minute, one colour per outcome."""
    left, right, top, bottom = 44, 8, 12, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = _nice_ceiling(tp.peak)
    slot = plot_w / tp.minutes
    bar_w = max(1.0, slot * 0.78)
    base = top + plot_h
    bars = []
    for i in range(tp.minutes):
        minute = tp.start + dt.timedelta(minutes=i)
        label = display.local_time(minute, "%H:%M")
        y = float(base)
        for status in OUTCOMES:
            n = tp.series[status][i]
            if not n:
                continue
            h = n / ymax * plot_h
            y -= h
            bars.append(
                {
                    "x": f"{left + i * slot + (slot - bar_w) / 2:.1f}",
                    "y": f"{y:.1f}",
                    "w": f"{bar_w:.1f}",
                    "h": f"{h:.1f}",
                    "status": status,
                    "title": f"{label} · {status}: {n}",
                }
            )
    grid = []
    divisions = _divisions(ymax)
    for k in range(divisions + 1):
        y = base - plot_h * k / divisions
        grid.append({"y": f"{y:.1f}", "label": str(ymax * k // divisions), "label_y": f"{y + 4:.1f}"})
    xlabels = []
    for i in range(0, tp.minutes, 10):
        minute = tp.start + dt.timedelta(minutes=i)
        xlabels.append(
            {"x": f"{left + i * slot + slot / 2:.1f}", "label": display.local_time(minute, "%H:%M")}
        )
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "base": base,
        "top": top,
        "bars": bars,
        "grid": grid,
        "xlabels": xlabels,
        "xlabel_y": height - 8,
        "ymax": ymax,
        "totals": [(status, tp.totals[status]) for status in OUTCOMES],
        "minutes": tp.minutes,
        "empty": tp.peak == 0,
        "center_x": f"{left + plot_w / 2:.1f}",
        "center_y": f"{top + plot_h / 2:.1f}",
    }
