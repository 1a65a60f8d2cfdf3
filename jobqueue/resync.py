"""Rebuild Redis from the database: the database is the truth, Redis only a fast copy.

Run by ``jobs resync`` and by every worker at start (and whenever a worker finds that
Redis lost its data), so a flushed or restarted Redis loses nothing. This module reads
the rows; :class:`jobqueue.engine.TopicResync` makes Redis match them, and
:func:`jobqueue.engine.metrics.replace` puts back the metrics counted from them.

The live counters count events as they happen; the tables give back what they still
hold, so a rebuild is exact where no job was purged and no attempt numbering was reset:

- ``enqueued``: the topic's jobs;
- ``succeeded``: executions that succeeded;
- ``retried``: executions that failed with attempts left (``retry``, or a timeout
  short of the job's ``max_attempts``);
- ``failed``: executions that ended their job failed (``failed``, or a timeout or a
  lost attempt at the job's ``max_attempts``);
- ``lost``: executions lost with their worker;
- ``run``: every finished attempt's duration but lost ones (their end is unknown);
- ``wait``: one observation per job that started and is no longer pending, its last
  attempt's (earlier attempts' waits are not kept in the tables).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import engine
from .engine import ResyncReport, TopicResync, TopicRows
from .engine.metrics import BUCKETS, LABELS, replace, unbuilt
from .models import Execution, ExecutionOutcome, Job, JobStatus, Topic


def resync(topics: Iterable[str] | None = None) -> ResyncReport:
    """Make each topic's Redis structures match its rows (every topic with a row by default).

    Queued rows missing from the queue are pushed in queue order (priority, then
    time queued), so after a FLUSHDB the pop order is what it was; ids whose row
    is no longer queued are dropped; scheduled rows are rescheduled; a running
    row without a lease gets one, so the reaper recovers it if no worker renews it;
    a topic's paused flag follows its row; a topic's metrics hash, if Redis lost it,
    is rebuilt from the jobs and executions tables (:func:`counted`).
    """
    report = ResyncReport()
    names = list(topics) if topics is not None else list(Topic.objects.values_list("name", flat=True))
    rows = {t.name: t for t in Topic.objects.filter(name__in=names)}
    for topic in names:
        row = rows.get(topic)
        engine.flow.configure(topic, row.flow_limits() if row is not None else None)
        # Redis is read before the rows.
        redis_side = TopicResync(topic, paused=row.is_paused if row is not None else None)
        jobs = Job.objects.filter(topic_id=topic)
        redis_side.apply(
            TopicRows(
                queued=list(jobs.filter(status=JobStatus.QUEUED).in_queue_order()
                            .values_list("pk", "priority", "entity_id")),
                scheduled=list(jobs.filter(status=JobStatus.SCHEDULED)
                               .values_list("pk", "run_after", "priority", "entity_id")),
                running=list(jobs.filter(status=JobStatus.RUNNING).values_list("pk", flat=True)),
                keys={str(pk): key for pk, key in jobs.filter(status__in=KEYED_STATUSES, key__isnull=False)
                      .values_list("pk", "key")},
                recent_starts=_recent_starts(topic, row),
            ),
            report,
        )
    report.metrics = unbuilt(names)
    if report.metrics:
        replace(counted(report.metrics))
    return report


#: The rows whose job key a resync reads: a keyed job goes behind its key (queued, or once
#: due), and a running one counts against its key's limit.
KEYED_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING)


def _recent_starts(topic: str, row: Topic | None) -> list[float]:
    """When the attempts of a rate-limited topic started within one burst's time (ms since
    the epoch): finished ones by the executions' finished index, running ones by the jobs'."""
    limits = row.flow_limits() if row is not None else None
    if limits is None or limits.rate is None:
        return []
    cutoff = timezone.now() - dt.timedelta(milliseconds=limits.rate.burst * limits.rate.interval_ms)
    finished = Execution.objects.filter(finished_at__gte=cutoff, started_at__gte=cutoff, job__topic_id=topic)
    running = Job.objects.filter(topic_id=topic, status=JobStatus.RUNNING, started_at__gte=cutoff)
    starts = [*finished.values_list("started_at", flat=True), *running.values_list("started_at", flat=True)]
    return [start.timestamp() * 1000 for start in starts if start is not None]


def _buckets(name: str, counts: dict[str, Any], total: int, seconds: float) -> dict[str, int]:
    """Non-cumulative bucket fields from cumulative counts ``le0``, ``le1``, ... and ``total``."""
    fields, below = {}, 0
    for i, label in enumerate(LABELS):
        upto = total if i == len(BUCKETS) else int(counts[f"le{i}"] or 0)
        fields[f"{name}:{label}"] = upto - below
        below = upto
    fields[f"{name}:us"] = round(seconds * 1e6)
    return fields


def counted(topics: Iterable[str]) -> dict[str, dict[str, int]]:
    """The fields of each topic's metrics hash, as the tables give them back (two
    aggregate queries, whatever the number of topics)."""
    names = list(topics)
    out: dict[str, dict[str, int]] = {name: {} for name in names}
    if not names:
        return out

    final = Q(attempt__gte=F("job__max_attempts"))
    ran = Q(duration__isnull=False) & ~Q(outcome=ExecutionOutcome.LOST)
    executions = (
        Execution.objects.filter(job__topic_id__in=names)
        .values("job__topic_id")
        .order_by()
        .annotate(
            succeeded=Count("pk", filter=Q(outcome=ExecutionOutcome.SUCCEEDED)),
            retried=Count("pk", filter=Q(outcome=ExecutionOutcome.RETRY) | (Q(outcome=ExecutionOutcome.TIMEOUT)
                                                                              & ~final)),
            failed=Count("pk", filter=Q(outcome=ExecutionOutcome.FAILED) | (
                Q(outcome__in=[ExecutionOutcome.TIMEOUT, ExecutionOutcome.LOST]) & final)),
            lost=Count("pk", filter=Q(outcome=ExecutionOutcome.LOST)),
            ran=Count("pk", filter=ran),
            ran_seconds=Sum("duration", filter=ran),
            **{f"le{i}": Count("pk", filter=ran & Q(duration__lte=bound)) for i, bound in enumerate(BUCKETS)},
        )
    )
    for row in executions:
        values: dict[str, Any] = dict(row)
        fields = out[values["job__topic_id"]]
        fields.update({name: values[name] for name in ("succeeded", "retried", "failed", "lost")})
        fields.update(_buckets("run", values, values["ran"], float(values["ran_seconds"] or 0.0)))

    waited = Q(started_at__isnull=False, waited__gte=dt.timedelta(0)) & ~Q(
        status__in=[JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED])
    jobs = (
        Job.objects.filter(topic_id__in=names)
        .alias(waited=ExpressionWrapper(F("started_at") - Coalesce("queued_at", "created_at"),
                                        output_field=DurationField()))
        .values("topic_id")
        .order_by()
        .annotate(
            enqueued=Count("pk"),
            started=Count("pk", filter=waited),
            waited_for=Sum("waited", filter=waited),
            **{f"le{i}": Count("pk", filter=waited & Q(waited__lte=dt.timedelta(seconds=bound)))
               for i, bound in enumerate(BUCKETS)},
        )
    )
    for row in jobs:
        fields = out[row["topic_id"]]
        fields["enqueued"] = row["enqueued"]
        seconds = row["waited_for"].total_seconds() if row["waited_for"] is not None else 0.0
        fields.update(_buckets("wait", row, row["started"], seconds))
    return out


__all__ = ["ResyncReport", "counted", "resync"]
