"""Rebuild Redis from the database: the database is the truth, Redis only a fast copy.

Run by ``jobs resync`` and by every worker at start, so a flushed or restarted
Redis loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..conf import settings
from .connection import get_redis
from .keys import TopicKeys
from .metrics import replace, unbuilt
from .queue import PRIORITY_SHIFT, PUSH_CHUNK, _s, change_priority, forget_announced, push, schedule, set_paused


@dataclass
class ResyncReport:
    pushed: dict[str, int] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    reprioritised: dict[str, int] = field(default_factory=dict)
    #: Topics whose metrics were rebuilt from the database (their Redis hash was missing).
    metrics: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(self.pushed.values()) + sum(self.scheduled.values()) + sum(self.dropped.values())


def resync(topics: Iterable[str] | None = None) -> ResyncReport:
    """Make each topic's Redis structures match its rows.

    Queued rows missing from the queue are pushed in queue order (priority, then
    time queued), so after a FLUSHDB the pop order is what it was; ids whose row
    is no longer queued are dropped; scheduled rows are rescheduled; a running
    row without a lease gets one, so the reaper recovers it if no worker renews it;
    a topic's paused flag follows its row; a topic's metrics hash, if Redis lost it,
    is rebuilt from the jobs and executions tables.
    """
    from ..counting import counted
    from ..models import Job, JobStatus, Topic

    forget_announced()
    report = ResyncReport()
    names = list(topics) if topics is not None else list(Topic.objects.values_list("name", flat=True))
    paused = dict(Topic.objects.filter(name__in=names).values_list("name", "is_paused"))
    r = get_redis()
    for topic in names:
        k = TopicKeys(topic)
        if topic in paused and paused[topic] != bool(r.exists(k.paused)):
            set_paused(topic, paused[topic])
        pairs: list[tuple[bytes, float]] = r.zrange(k.queue, 0, -1, withscores=True)  # type: ignore[assignment]
        scores = {_s(i): score for i, score in pairs}
        in_queue = set(scores)
        leased = {_s(i) for i in r.zrange(k.leases, 0, -1)}
        in_schedule = {_s(i) for i in r.zrange(k.scheduled, 0, -1)}

        rows = Job.objects.filter(topic_id=topic, status=JobStatus.QUEUED).in_queue_order()
        queued = list(rows.values_list("pk", "priority", "entity_id"))
        queued_ids = {str(pk) for pk, _, _ in queued}
        missing = [(str(pk), p, e) for pk, p, e in queued if str(pk) not in in_queue and str(pk) not in leased]
        stale = [i for i in in_queue if i not in queued_ids]
        if stale:
            r.zrem(k.queue, *stale)
        # A priority change that reached the database but not Redis (e.g. it raced the push).
        for pk, priority, _entity in queued:
            score = scores.get(str(pk))
            if score is not None and 100 - int(score) // PRIORITY_SHIFT != priority:
                change_priority(topic, str(pk), priority)
                report.reprioritised[topic] = report.reprioritised.get(topic, 0) + 1
        for start in range(0, len(missing), PUSH_CHUNK):
            push(topic, missing[start : start + PUSH_CHUNK])

        sched_rows = Job.objects.filter(topic_id=topic, status=JobStatus.SCHEDULED).values_list(
            "pk", "run_after", "priority", "entity_id"
        )
        sched = [(str(pk), (ra.timestamp() if ra else time.time()), p, e) for pk, ra, p, e in sched_rows]
        sched_ids = {s[0] for s in sched}
        sched_missing = [s for s in sched if s[0] not in in_schedule]
        sched_stale = [i for i in in_schedule if i not in sched_ids]
        if sched_stale:
            r.zrem(k.scheduled, *sched_stale)
            r.hdel(k.schedprio, *sched_stale)
        if sched_missing:
            schedule(topic, sched_missing)

        running_rows = Job.objects.filter(topic_id=topic, status=JobStatus.RUNNING).values_list("pk", flat=True)
        running = [str(pk) for pk in running_rows]
        unleased = [i for i in running if i not in leased]
        if unleased:
            # The Redis clock, as the Lua scripts use: a skewed local clock must not shorten the lease.
            seconds, micros = r.time()
            deadline = seconds * 1000 + micros // 1000 + settings.LEASE_SECONDS * 1000
            r.zadd(k.leases, {i: deadline for i in unleased})

        if missing:
            report.pushed[topic] = len(missing)
        if sched_missing:
            report.scheduled[topic] = len(sched_missing)
        if stale or sched_stale:
            report.dropped[topic] = len(stale) + len(sched_stale)
        if unleased:
            report.leases[topic] = len(unleased)
    report.metrics = unbuilt(names)
    if report.metrics:
        replace(counted(report.metrics))
    return report
