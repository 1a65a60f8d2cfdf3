"""Rebuild Redis from the database: the database is the truth, Redis only a fast copy.

Run by ``jobs resync`` and by every worker at start (and whenever a worker finds that
Redis lost its data), so a flushed or restarted Redis loses nothing. This module reads
the rows; :class:`jobqueue.engine.TopicResync` makes Redis match them, and
:func:`jobqueue.engine.metrics.replace` puts back the metrics counted from them.

The live counters count events as they happen; the tables give back what they hold, so a
rebuild is exact where no job was purged before the tally took it (below) and no attempt
numbering was reset:

- ``enqueued``: the topic's jobs;
- ``succeeded``: executions that succeeded;
- ``retried``: executions that failed with attempts left (``retry``, or a timeout
  short of the job's ``max_attempts``);
- ``failed``: executions that ended their job failed (``failed``, or a timeout or a
  lost attempt at the job's ``max_attempts``);
- ``lost``: executions lost with their worker;
- ``run``: every finished attempt's duration but lost ones (their end is unknown);
- ``wait``: one observation per job that started and is no longer pending, its last
  attempt's (earlier attempts' waits are not kept in the tables);
- ``jobs:succeeded``, ``jobs:failed``, ``jobs:cancelled``: the jobs in that status (not
  metrics: :func:`job_counts` reads them, and a rebuilt metrics hash leaves them out; a
  requeue or a delete takes its jobs off the tally, see :mod:`jobqueue.tally`).

Finished rows are added up once: workers move a watermark forward through them, a bounded
number at a time (:func:`roll_up`), into a :class:`~jobqueue.models.MetricsTally` row per
topic, and a rebuild reads only the rows stamped since (:func:`counted`). Its cost follows
the recent traffic, not the size of the tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import connection, router, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import engine
from .engine import ResyncReport, TopicResync, TopicRows
from .engine.metrics import BUCKETS, LABELS, replace, unbuilt
from .models import ACTIVE_STATUSES, Execution, ExecutionOutcome, Job, JobStatus, MetricsTally, Topic
from .tally import JOBS_FIELD, lock_watermark


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
        replace({topic: {name: n for name, n in fields.items() if not name.startswith(JOBS_FIELD)}
                 for topic, fields in counted(report.metrics).items()})
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


#: How far behind now (and behind the oldest open transaction, on PostgreSQL) the tally's
#: watermark stays: a row is rolled up only once nothing can still commit a row stamped before it.
ROLLUP_LAG = dt.timedelta(minutes=1)
#: Rows of each kind (executions finished, jobs created, jobs finished per status) that one
#: :func:`roll_up` reads at most: the watermark moves only as far as that many rows.
ROLLUP_ROWS = 10_000
#: The statuses whose jobs stay as they are (unless requeued: see :func:`jobqueue.tally.untally`).
_DONE = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
#: The statuses of jobs that wait and have not started.
_PENDING = [JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED]


def job_counts(topics: Iterable[str]) -> dict[str, dict[str, int]]:
    """Jobs by status (every status, zeros included) of each topic, at a cost bounded at any
    table size: what ``GET /stats``, :meth:`~jobqueue.managers.JobManager.queue_status`, the
    dashboard and the admin's topic list show.

    The jobs not finished (waiting, scheduled, queued, running: few, in a system that keeps
    up) are counted through the ``(topic, status)`` index. The finished ones come from the
    tally and the rows finished since its watermark (:func:`counted`): the jobs in that
    status now, as a plain count gives them, since a requeue or a delete of a job the tally
    counts takes it off in the same transaction (:func:`jobqueue.tally.untally`). Until a
    worker first rolls the tally up, every row is read.
    """
    names = list(dict.fromkeys(topics))
    out = {name: {status: 0 for status in JobStatus.values} for name in names}
    if not names:
        return out
    active = (
        Job.objects.filter(topic_id__in=names, status__in=ACTIVE_STATUSES)
        .values_list("topic_id", "status")
        .annotate(n=Count("*"))  # COUNT(*): answered from the index alone
        .order_by()
    )
    for topic, status, n in active:
        out[topic][status] = n
    for topic, fields in counted(names).items():
        for status in _DONE:
            out[topic][status] = fields.get(JOBS_FIELD + status, 0)
    return out


def counted(topics: Iterable[str]) -> dict[str, dict[str, int]]:
    """The fields of each topic's metrics hash, as the tables give them back.

    The rows stamped before the tally's watermark are not read: their counts come from the
    :class:`~jobqueue.models.MetricsTally` rows (read with the watermark in one query, so a
    roll-up meanwhile is seen whole or not at all). The rest is read through indexes:
    executions finished since the watermark (or not finished), jobs created since, and the
    jobs running or finished since. The cost follows what happened since the watermark
    (about :data:`ROLLUP_LAG` plus the time between two roll-ups), not the table's size.

    The metrics stay when their rows go: a purge does not take them back, nor does a
    requeue of a finished job (its next attempt adds one more wait, as the live counter
    does). The finished jobs by status (``jobs:failed``) are the rows now: a requeue or a
    delete takes its jobs off the tally (:func:`jobqueue.tally.untally`).
    """
    names = list(topics)
    out: dict[str, dict[str, int]] = {name: {} for name in names}
    if not names:
        return out
    tallies = {row.topic: row for row in MetricsTally.objects.filter(topic__in=[*names, ""])}
    head = tallies.pop("", None)
    since = head.until if head is not None else None
    for topic, row in tallies.items():
        _add(out[topic], row.counts)
    # After a watermark the time stamps alone bound what is read: every topic's rows since
    # then are read (by the time stamps' indexes, which lead), and the others' dropped here.
    for topic, fields in _aggregate(since, None, names if since is None else None).items():
        if topic in out:
            _add(out[topic], fields)
    return out


def _add(into: dict[str, int], fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        into[name] = into.get(name, 0) + int(value)


def _aggregate(lower: dt.datetime | None, upper: dt.datetime | None,
               names: list[str] | None) -> dict[str, dict[str, int]]:
    """The metrics fields of the rows stamped in ``[lower, upper)``, by topic (two or three
    aggregate queries, whatever the number of topics).

    With ``upper`` (a roll-up's window) only rows that are done count: executions finished,
    jobs created, jobs finished. Without it (what follows the watermark) the rows not done
    count too: executions not finished, running jobs, finished jobs with no finish time.
    ``names`` limits the topics (``None``: every topic).
    """
    out: dict[str, dict[str, int]] = {}

    def fields(topic: str) -> dict[str, int]:
        return out.setdefault(topic, {})

    stamped = Q()
    if lower is not None:
        stamped &= Q(finished_at__gte=lower)
    if upper is not None:
        stamped &= Q(finished_at__lt=upper)
    elif lower is not None:
        stamped |= Q(finished_at__isnull=True)

    final = Q(attempt__gte=F("job__max_attempts"))
    ran = Q(duration__isnull=False) & ~Q(outcome=ExecutionOutcome.LOST)
    finished = Execution.objects.filter(stamped)
    if names is not None:
        finished = finished.filter(job__topic_id__in=names)
    executions = (
        finished.values("job__topic_id")
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
        into = fields(values["job__topic_id"])
        into.update({name: values[name] for name in ("succeeded", "retried", "failed", "lost")})
        into.update(_buckets("run", values, values["ran"], float(values["ran_seconds"] or 0.0)))

    created = Job.objects.all()
    if names is not None:
        created = created.filter(topic_id__in=names)
    if lower is not None:
        created = created.filter(created_at__gte=lower)
    if upper is not None:
        created = created.filter(created_at__lt=upper)
    for topic, n in created.values("topic_id").order_by().annotate(n=Count("pk")).values_list("topic_id", "n"):
        fields(topic)["enqueued"] = n

    # One wait per job that started and is no longer pending: its last attempt's; and the
    # finished jobs by status (started or not: a job that never started has no wait).
    if upper is not None:
        done = Q(status__in=_DONE, finished_at__lt=upper)
        if lower is not None:
            done &= Q(finished_at__gte=lower)
    elif lower is not None:
        done = Q(status=JobStatus.RUNNING) | Q(status__in=_DONE, finished_at__gte=lower) | Q(
            status__in=_DONE, finished_at__isnull=True)
    else:
        done = ~Q(status__in=_PENDING)
    ended = Job.objects.filter(done)
    if names is not None:
        ended = ended.filter(topic_id__in=names)
    waited = Q(started_at__isnull=False, waited__gte=dt.timedelta(0))
    waits = (
        ended.alias(waited=ExpressionWrapper(F("started_at") - Coalesce("queued_at", "created_at"),
                                             output_field=DurationField()))
        .values("topic_id")
        .order_by()
        .annotate(
            started=Count("pk", filter=waited),
            waited_for=Sum("waited", filter=waited),
            **{f"le{i}": Count("pk", filter=waited & Q(waited__lte=dt.timedelta(seconds=bound)))
               for i, bound in enumerate(BUCKETS)},
            **{JOBS_FIELD + status: Count("pk", filter=Q(status=status)) for status in _DONE},
        )
    )
    for row in waits:
        into = fields(row["topic_id"])
        into.update({name: n for name, n in row.items() if name.startswith(JOBS_FIELD) and n})
        if row["started"]:
            seconds = row["waited_for"].total_seconds() if row["waited_for"] is not None else 0.0
            into.update(_buckets("wait", row, row["started"], seconds))
    return out


def roll_up(now: dt.datetime | None = None, rows: int = ROLLUP_ROWS) -> bool:
    """Move the tally's watermark forward over at most ``rows`` rows of each kind, adding
    what they count to each topic's :class:`~jobqueue.models.MetricsTally` row; returns
    whether it stopped short of :data:`ROLLUP_LAG` (more to do: call again).

    Many workers may call it at once: the window is read and added, and the watermark
    moved, under the watermark row's lock (:func:`jobqueue.tally.lock_watermark`, which a
    requeue or a delete of finished jobs holds too), so a window is added once and counts
    the jobs as they are when it commits. The window is read
    through the time stamps' indexes and stops :data:`ROLLUP_LAG` before now and, on
    PostgreSQL, before the oldest open transaction started (a row stamped before the
    watermark but committed after it would never be counted).
    """
    head, _created = MetricsTally.objects.get_or_create(topic="")
    lower = head.until
    cutoff = upper = _cutoff(now or timezone.now())
    short = False
    for edge in _nth_stamps(lower, rows):
        if edge < upper:
            upper, short = edge, True
    if lower is not None and upper <= lower:  # more than ``rows`` rows share one time stamp
        upper = lower + dt.timedelta(microseconds=1)
        if upper > cutoff:
            return False
    using = router.db_for_write(MetricsTally)
    with transaction.atomic(using=using):
        # Read under the watermark's lock: a requeue or a delete (tally.untally) that
        # commits first is seen, one that waits for this roll-up sees its watermark.
        if lock_watermark(using).until != lower:
            return False  # another worker moved it first
        window = _aggregate(lower, upper, None)
        moved = MetricsTally.objects.filter(topic="", until=lower) if lower is not None else (
            MetricsTally.objects.filter(topic="", until__isnull=True))
        if not moved.update(until=upper):
            return False  # a roll-up nested in this one's read moved it (the lock keeps others out)
        # The watermark's lock covers the topics' rows: every writer of the tally takes it first.
        kept = {row.topic: row for row in MetricsTally.objects.filter(topic__in=list(window))}
        new = []
        for topic, fields in window.items():
            row = kept.get(topic)
            if row is None:
                new.append(MetricsTally(topic=topic, counts=fields))
            else:
                _add(row.counts, fields)
        MetricsTally.objects.bulk_update(kept.values(), ["counts"])
        MetricsTally.objects.bulk_create(new)
    return short


def _cutoff(now: dt.datetime) -> dt.datetime:
    """Where a roll-up stops: :data:`ROLLUP_LAG` before now, or before the oldest open
    transaction of another client of the database on PostgreSQL (one left open for long
    holds the watermark back: the rebuild then reads more rows, never fewer)."""
    edge = now
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # not a view cached earlier in a transaction
            cursor.execute("SELECT min(xact_start) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND backend_type = 'client backend'")
            row = cursor.fetchone()
        if row and row[0] is not None:
            edge = min(edge, row[0])
    return edge - ROLLUP_LAG


def _nth_stamps(lower: dt.datetime | None, rows: int) -> list[dt.datetime]:
    """The time stamp of the row ``rows`` rows after ``lower`` in each index a roll-up reads."""
    sources = [(Execution.objects.all(), "finished_at"), (Job.objects.all(), "created_at")]
    sources += [(Job.objects.filter(status=status), "finished_at") for status in _DONE]
    out = []
    for qs, column in sources:
        qs = qs.filter(**{f"{column}__isnull": False})
        if lower is not None:
            qs = qs.filter(**{f"{column}__gte": lower})
        edge = qs.order_by(column).values_list(column, flat=True)[rows : rows + 1].first()
        if edge is not None:
            out.append(edge)
    return out


__all__ = ["ResyncReport", "counted", "job_counts", "resync", "roll_up"]
