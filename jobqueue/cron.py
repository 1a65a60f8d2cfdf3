"""Cron topics: ``@handler("report", cron="*/5 * * * *")`` or the editable ``Topic.cron``.

Every worker runs :func:`run_scheduler` about once a second (a maintenance hook);
each period is enqueued exactly once however many workers run, because the first
to ``SET <topic cron key>:<period> NX`` in Redis is the only one that enqueues.
Missed periods are not replayed: a worker that starts late enqueues only the most
recent due period, and a schedule first seen now starts with the current minute.
Schedules read the current time zone (``TIME_ZONE``); a paused topic is skipped.
Expressions are read by :class:`~jobqueue.cron_schedule.CronSchedule`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings as django_settings
from django.utils import timezone

from .cron_schedule import CronSchedule
from .engine import TopicKeys, get_redis
from .models import Job, Topic

logger = logging.getLogger("jobqueue.cron")


#: Seconds a period's claim in Redis outlives the start of the next period.
CLAIM_MARGIN_SECONDS = 3600


def _local(now: dt.datetime | None = None) -> dt.datetime:
    now = now or timezone.now()
    if django_settings.USE_TZ:
        return timezone.localtime(now)
    return timezone.make_naive(now) if timezone.is_aware(now) else now


def _schedule(topic: Topic) -> CronSchedule | None:
    if not topic.cron:
        return None
    try:
        return CronSchedule(topic.cron)
    except ValueError as exc:
        if (topic.name, topic.cron) not in _reported:
            _reported.add((topic.name, topic.cron))
            logger.error("Topic %s has an invalid cron schedule; nothing is scheduled: %s", topic.name, exc)
        return None


_reported: set[tuple[str, str]] = set()


def next_run(topic: Topic | str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When ``topic``'s next cron period starts (in the current time zone), or ``None``
    if it has no valid schedule. Paused topics get a time too; they skip it."""
    row = topic if isinstance(topic, Topic) else Topic.objects.filter(name=topic).first()
    schedule = _schedule(row) if row is not None else None
    return schedule.next_after(_local(now)) if schedule is not None else None


def _first_seen(client: Any, key: str, expression: str, now_ts: int) -> int:
    """When this schedule of the topic was first seen by any worker (epoch seconds)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hsetnx(key, expression, now_ts)
        pipe.hget(key, expression)
        created, value = pipe.execute()
    if created:
        # A new expression: earlier ones of this topic are history.
        stale = [f for f in client.hkeys(key) if (f.decode() if isinstance(f, bytes) else f) != expression]
        if stale:
            client.hdel(key, *stale)
    return int(value)


def enqueue_period(topic: Topic, now: dt.datetime | None = None) -> Job | None:
    """Enqueue ``topic``'s most recent due period unless some worker did already.

    Returns the new job, or ``None`` (nothing due, already enqueued, or the period
    began before this schedule was first seen).
    """
    schedule = _schedule(topic)
    if schedule is None:
        return None
    local = _local(now)
    period = schedule.previous(local)
    if period is None:
        return None
    period_ts = int(period.timestamp())
    r = get_redis()
    base = TopicKeys(topic.name).cron
    since = _first_seen(r, f"{base}:since", topic.cron, int(local.timestamp()))
    if period_ts < since - since % 60:
        return None  # before this schedule existed: never replayed
    claim = f"{base}:{period_ts}"
    ttl = int(schedule.next_after(period).timestamp() - local.timestamp()) + CLAIM_MARGIN_SECONDS
    if not r.set(claim, "1", nx=True, ex=max(ttl, 60)):
        return None
    try:
        job = Job.objects.enqueue(topic.name, {"scheduled_for": period.isoformat()})
    except Exception:
        r.delete(claim)  # let the next pass (of any worker) try again
        raise
    logger.info("Cron: enqueued %s for %s (job %s).", topic.name, period.isoformat(), job.pk)
    return job


def enqueue_due(topics: Iterable[str] | None = None, now: dt.datetime | None = None) -> list[Job]:
    """Enqueue the due period of every cron topic (or of ``topics``) that is not paused."""
    rows = Topic.objects.exclude(cron="").filter(is_paused=False)
    if topics is not None:
        rows = rows.filter(name__in=list(topics))
    created = []
    for topic in rows:
        job = enqueue_period(topic, now)
        if job is not None:
            created.append(job)
    return created


def run_scheduler(worker: Any = None) -> None:
    """The maintenance hook: schedule the cron topics this worker serves (all without a worker)."""
    topics = getattr(worker, "topics", None) if worker is not None else None
    enqueue_due(topics)

