"""Rebuild Redis from the database: the database is the truth, Redis only a fast copy.

Run by ``jobs resync`` and by every worker at start (and whenever a worker finds that
Redis lost its data), so a flushed or restarted Redis loses nothing. This module reads
the rows; :class:`jobqueue.engine.TopicResync` makes Redis match them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .engine import ResyncReport, TopicResync, TopicRows
from .models import Job, JobStatus, Topic


def resync(topics: Iterable[str] | None = None) -> ResyncReport:
    """Make each topic's Redis structures match its rows (every topic with a row by default).

    Queued rows missing from the queue are pushed in queue order (priority, then
    time queued), so after a FLUSHDB the pop order is what it was; ids whose row
    is no longer queued are dropped; scheduled rows are rescheduled; a running
    row without a lease gets one, so the reaper recovers it if no worker renews it;
    a topic's paused flag follows its row.
    """
    report = ResyncReport()
    names = list(topics) if topics is not None else list(Topic.objects.values_list("name", flat=True))
    paused = dict(Topic.objects.filter(name__in=names).values_list("name", "is_paused"))
    for topic in names:
        redis_side = TopicResync(topic, paused=paused.get(topic))  # Redis is read before the rows
        jobs = Job.objects.filter(topic_id=topic)
        redis_side.apply(
            TopicRows(
                queued=list(jobs.filter(status=JobStatus.QUEUED).in_queue_order()
                            .values_list("pk", "priority", "entity_id")),
                scheduled=list(jobs.filter(status=JobStatus.SCHEDULED)
                               .values_list("pk", "run_after", "priority", "entity_id")),
                running=list(jobs.filter(status=JobStatus.RUNNING).values_list("pk", flat=True)),
            ),
            report,
        )
    return report


__all__ = ["ResyncReport", "resync"]
