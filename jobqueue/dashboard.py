"""The numbers behind the admin's topic list and dashboard.

Each function asks the database a few grouped questions for all the topics it is given
(answered from the ``(topic, status)``, ``(status, finished_at)`` and queued-job
indexes; the failed jobs from the metrics tally and the rows since its watermark, see
:func:`jobqueue.resync.job_counts`) and Redis one pipeline, so a page costs the same few
round trips whether it shows two topics or a hundred, and at any table size. Redis being
down never breaks a page: its numbers come back as ``None`` and the database still answers.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from . import engine
from .models import FINISHED_STATUSES, Job, JobStatus
from .resync import job_counts

logger = logging.getLogger("jobqueue.admin")

#: Statuses counted per topic; succeeded jobs (usually the most) are left out on purpose.
COUNTED_STATUSES = (
    JobStatus.WAITING,
    JobStatus.SCHEDULED,
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.FAILED,
)
#: The window of the dashboard's per-topic "last 24 h" numbers.
RECENT_WINDOW = dt.timedelta(hours=24)
#: Minutes shown by the throughput chart.
THROUGHPUT_MINUTES = 60


@dataclass
class TopicStats:
    name: str
    #: Jobs by status (only :data:`COUNTED_STATUSES`), from the database (failed ones through
    #: the metrics tally, see :func:`jobqueue.resync.job_counts`).
    counts: dict[str, int] = field(default_factory=dict)
    #: Queued jobs by priority, highest priority first: ``[(priority, count), ...]``.
    by_priority: list[tuple[int, int]] = field(default_factory=list)
    #: ``{"queued", "leased", "scheduled"}`` sizes in Redis; ``None`` if Redis is unreachable.
    redis: dict[str, int] | None = None
    #: Who holds the topic's slots (``engine.Holder``); ``None`` if Redis is unreachable.
    holders: list[engine.Holder] | None = None
    #: Succeeded / failed in :data:`RECENT_WINDOW` (filled by ``with_recent=True``).
    recent: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)


def topic_stats(
    names: Sequence[str], *, with_recent: bool = False, now: dt.datetime | None = None
) -> dict[str, TopicStats]:
    """Counts, queue depth by priority, Redis sizes and slot holders of ``names``."""
    names = list(dict.fromkeys(names))
    stats = {name: TopicStats(name=name) for name in names}
    if not names:
        return stats
    for topic, counts in job_counts(names).items():
        stats[topic].counts = {status: counts[status] for status in COUNTED_STATUSES}
    prio_rows = (
        Job.objects.filter(topic_id__in=names, status=JobStatus.QUEUED)
        .values_list("topic_id", "priority")
        .annotate(n=Count("*"))
        .order_by("topic_id", "-priority")
    )
    for topic, priority, n in prio_rows:
        stats[topic].by_priority.append((priority, n))
    if with_recent:
        since = (now or timezone.now()) - RECENT_WINDOW
        recent = (
            Job.objects.filter(
                status__in=(JobStatus.SUCCEEDED, JobStatus.FAILED), finished_at__gte=since, topic_id__in=names
            )
            .values_list("topic_id", "status")
            .annotate(n=Count("*"))
            .order_by()
        )
        for topic, status, n in recent:
            stats[topic].recent[status] = n
    _add_redis(stats)
    return stats


def _add_redis(stats: dict[str, TopicStats]) -> None:
    try:
        with engine.get_redis().pipeline(transaction=False) as pipe:
            for name in stats:
                keys = engine.TopicKeys(name)
                pipe.zcard(keys.queue)
                pipe.zcard(keys.leases)
                pipe.zcard(keys.scheduled)
            sizes = pipe.execute()
        for i, item in enumerate(stats.values()):
            queued, leased, scheduled = sizes[3 * i : 3 * i + 3]
            item.redis = {"queued": queued, "leased": leased, "scheduled": scheduled}
            item.holders = engine.TopicLock.holders(item.name)
    except redis.RedisError as exc:
        logger.warning("Redis unavailable for the admin's topic numbers (%s).", exc)


@dataclass
class Throughput:
    """Jobs finished per minute and outcome over the last ``minutes`` minutes."""

    start: dt.datetime  # the first minute shown (aware, truncated to the minute)
    minutes: int
    #: ``{status: [count per minute, oldest first]}`` for succeeded, failed, cancelled.
    series: dict[str, list[int]]

    @property
    def totals(self) -> dict[str, int]:
        return {status: sum(values) for status, values in self.series.items()}

    @property
    def peak(self) -> int:
        """The highest per-minute total (all outcomes stacked)."""
        return max((sum(col) for col in zip(*self.series.values(), strict=True)), default=0)


def throughput(minutes: int = THROUGHPUT_MINUTES, now: dt.datetime | None = None) -> Throughput:
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0)
    start = end - dt.timedelta(minutes=minutes - 1)
    series: dict[str, list[int]] = {status: [0] * minutes for status in FINISHED_STATUSES}
    rows = (
        Job.objects.filter(status__in=FINISHED_STATUSES, finished_at__gte=start)
        .annotate(minute=TruncMinute("finished_at", tzinfo=dt.timezone.utc))
        .values_list("minute", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    for minute, status, n in rows:
        index = int((minute - start).total_seconds() // 60)
        if 0 <= index < minutes:
            series[status][index] += n
    return Throughput(start=start, minutes=minutes, series=series)


def workers() -> list[dict[str, Any]] | None:
    """Live workers from their heartbeats (see ``engine.live_workers``); ``None`` without Redis."""
    try:
        return engine.live_workers()
    except redis.RedisError as exc:
        logger.warning("Redis unavailable for the admin's worker list (%s).", exc)
        return None


def holders_by_worker(stats: Iterable[TopicStats]) -> dict[str, list[str]]:
    """Topics whose slots each worker holds now, from the lock holders."""
    owned: dict[str, list[str]] = defaultdict(list)
    for item in stats:
        for holder in item.holders or ():
            owned[holder.worker_id].append(item.name)
    return dict(owned)
