"""State changes on any number of jobs, a chunk at a time.

An admin action on "all 100,000 matching" must neither build 100,000 model
instances nor hold one huge transaction. So ids are read a chunk at a time
(``values_list`` only, see :func:`chunks`), each chunk changes with one
``UPDATE`` that names the statuses it leaves (a worker that took a job in between
keeps it), and Redis hears about the chunk in one pipeline once its transaction
commits. The database is the truth: if Redis is down, ``jobs resync`` repairs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.db import IntegrityError, connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .. import engine
from ..models import PENDING_STATUSES, Job, JobStatus
from ..signals import job_finished, send_finished
from ..validation import validate_priority

logger = logging.getLogger("jobqueue.admin")

#: Jobs read and changed per statement.
CHUNK_SIZE = 1000
REQUEUEABLE = (JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class BulkResult:
    changed: int = 0
    #: Running jobs asked to stop (cancel only).
    aborting: int = 0
    #: Jobs left alone because another active job has their entity id (requeue only).
    conflicts: int = 0


def chunks(
    queryset: QuerySet, *fields: str, chunk_size: int | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    """``(pk, *fields)`` tuples of ``queryset``, ``chunk_size`` at a time.

    On PostgreSQL one server-side cursor streams the rows (``.iterator()``: the
    database keeps the result, Python only one chunk). Elsewhere each chunk is its own
    short query starting after the last primary key seen, so rows the caller changes
    (and that then leave the queryset's filter) never shift the next chunk, and no
    cursor stays open on a connection that is also writing.
    """
    size = chunk_size or CHUNK_SIZE
    if connections[queryset.db].vendor == "postgresql":
        batch: list[tuple[Any, ...]] = []
        for row in queryset.order_by().values_list("pk", *fields).iterator(chunk_size=size):
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    qs = queryset.order_by("pk").values_list("pk", *fields)
    last = None
    while True:
        page = list((qs if last is None else qs.filter(pk__gt=last))[:size])
        if not page:
            return
        yield page
        last = page[-1][0]


def _db() -> str:
    return router.db_for_write(Job)


def _winners(rows: list[tuple[Any, ...]], updated: int, marker: Any, **state: Any) -> list[tuple[Any, ...]]:
    """The rows the guarded UPDATE changed: all of them, unless a worker won a few of the
    races; those are found by the ``updated_at`` value only this UPDATE wrote."""
    if updated == len(rows):
        return rows
    ids = [r[0] for r in rows]
    won = set(Job.objects.filter(pk__in=ids, updated_at=marker, **state).values_list("pk", flat=True))
    return [r for r in rows if r[0] in won]


def _pipeline_on_commit(calls: Callable[[Any], None]) -> None:
    """Run ``calls(pipe)`` on a Redis pipeline after the current transaction commits."""

    def run() -> None:
        try:
            with engine.get_redis().pipeline(transaction=False) as pipe:
                calls(pipe)
                pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Redis unavailable after a bulk change (%s); `jobs resync` repairs it.", exc)

    transaction.on_commit(run, using=_db())


def _send_finished(rows: Sequence[tuple[Any, ...]], has_dependents_index: int) -> None:
    """``job_finished`` and dependents' release, for the chunk's jobs that need them."""
    if job_finished.has_listeners(Job):
        ids = [r[0] for r in rows]
    else:
        ids = [r[0] for r in rows if r[has_dependents_index]]
    for job in Job.objects.filter(pk__in=ids).defer("payload", "result"):
        send_finished(job)


def cancel(queryset: QuerySet, reason: str = "cancelled", chunk_size: int | None = None) -> BulkResult:
    """Cancel the pending jobs of ``queryset`` and ask its running ones to stop."""
    result = BulkResult()
    pending = queryset.filter(status__in=PENDING_STATUSES)
    for rows in chunks(pending, "topic_id", "entity_id", "has_dependents", chunk_size=chunk_size):
        now = timezone.now()
        with transaction.atomic(using=_db()):
            updated = Job.objects.filter(pk__in=[r[0] for r in rows], status__in=PENDING_STATUSES).update(
                status=JobStatus.CANCELLED, finished_at=now, error=reason, updated_at=now
            )
            won = _winners(rows, updated, now, status=JobStatus.CANCELLED)
            _pipeline_on_commit(_removals([(topic, pk, entity) for pk, topic, entity, _ in won]))
            _send_finished(won, 3)
        result.changed += len(won)
    running = queryset.filter(status=JobStatus.RUNNING)
    for rows in chunks(running, "topic_id", chunk_size=chunk_size):
        _pipeline_on_commit(_abort_requests(rows))
        result.aborting += len(rows)
    return result


def requeue(queryset: QuerySet, chunk_size: int | None = None) -> BulkResult:
    """Put the failed and cancelled jobs of ``queryset`` back in their queues."""
    result = BulkResult()
    candidates = queryset.filter(status__in=REQUEUEABLE)
    for rows in chunks(candidates, "topic_id", "priority", "entity_id", chunk_size=chunk_size):
        now = timezone.now()
        values = {
            "status": JobStatus.QUEUED,
            "queued_at": now,
            "finished_at": None,
            "error": "",
            "worker_id": "",
            "run_after": None,
            "attempts": 0,
            "updated_at": now,
        }
        with transaction.atomic(using=_db()):
            try:
                with transaction.atomic(using=_db()):
                    ids = [r[0] for r in rows]
                    updated = Job.objects.filter(pk__in=ids, status__in=REQUEUEABLE).update(**values)
                won = _winners(rows, updated, now, status=JobStatus.QUEUED)
            except IntegrityError:
                # Some entity id is active again in a newer job: requeue the others one by one.
                won = []
                for row in rows:
                    try:
                        with transaction.atomic(using=_db()):
                            if Job.objects.filter(pk=row[0], status__in=REQUEUEABLE).update(**values):
                                won.append(row)
                    except IntegrityError:
                        result.conflicts += 1
            _pipeline_on_commit(_pushes(won))
        result.changed += len(won)
    return result


def run_now(queryset: QuerySet, chunk_size: int | None = None) -> BulkResult:
    """Queue the scheduled jobs of ``queryset`` now, instead of at their ``run_after``."""
    result = BulkResult()
    scheduled = queryset.filter(status=JobStatus.SCHEDULED)
    for rows in chunks(scheduled, "topic_id", "priority", "entity_id", chunk_size=chunk_size):
        now = timezone.now()
        with transaction.atomic(using=_db()):
            updated = Job.objects.filter(pk__in=[r[0] for r in rows], status=JobStatus.SCHEDULED).update(
                status=JobStatus.QUEUED, queued_at=now, run_after=None, updated_at=now
            )
            won = _winners(rows, updated, now, status=JobStatus.QUEUED)
            _pipeline_on_commit(_pushes(won))
        result.changed += len(won)
    return result


# Each factory returns what one chunk asks of Redis, as a function of a pipeline.
Calls = Callable[[Any], None]


def _removals(items: Sequence[tuple[str, Any, str | None]]) -> Calls:
    def calls(pipe: Any) -> None:
        for topic, pk, entity in items:
            engine.remove(topic, str(pk), entity, client=pipe)

    return calls


def _abort_requests(rows: Sequence[tuple[Any, ...]]) -> Calls:
    def calls(pipe: Any) -> None:
        for pk, topic in rows:
            engine.request_abort(topic, str(pk), client=pipe)

    return calls


def _pushes(rows: Sequence[tuple[Any, ...]]) -> Calls:
    by_topic: dict[str, list[tuple[str, int, str | None]]] = {}
    for pk, topic, priority, entity in rows:
        by_topic.setdefault(topic, []).append((str(pk), priority, entity))

    def calls(pipe: Any) -> None:
        for topic, items in by_topic.items():
            engine.push(topic, items, client=pipe)

    return calls


def _priority_changes(rows: Sequence[tuple[Any, ...]], priority: int) -> Calls:
    def calls(pipe: Any) -> None:
        for pk, topic in rows:
            engine.change_priority(topic, str(pk), priority, client=pipe)

    return calls


def set_priority(queryset: QuerySet, priority: int, chunk_size: int | None = None) -> BulkResult:
    """Change the priority of the pending jobs of ``queryset``, in the rows and the queues."""
    validate_priority(priority)
    result = BulkResult()
    pending = queryset.filter(status__in=PENDING_STATUSES)
    for rows in chunks(pending, "topic_id", chunk_size=chunk_size):
        now = timezone.now()
        with transaction.atomic(using=_db()):
            updated = Job.objects.filter(pk__in=[r[0] for r in rows], status__in=PENDING_STATUSES).update(
                priority=priority, updated_at=now
            )
            won = _winners(rows, updated, now)
            _pipeline_on_commit(_priority_changes(won, priority))
        result.changed += len(won)
    return result


def delete(queryset: QuerySet, chunk_size: int | None = None) -> BulkResult:
    """Delete the jobs of ``queryset`` that are not running (with their executions).

    A running job is left alone: its worker still owns it; cancel it first.
    """
    result = BulkResult()
    candidates = queryset.exclude(status=JobStatus.RUNNING)
    for rows in chunks(candidates, "topic_id", "entity_id", "status", chunk_size=chunk_size):
        with transaction.atomic(using=_db()):
            locked = Job.objects.filter(pk__in=[r[0] for r in rows]).exclude(status=JobStatus.RUNNING)
            if transaction.get_connection(_db()).features.has_select_for_update:
                locked = locked.select_for_update()
            ids = set(locked.values_list("pk", flat=True))
            # only("pk"): the collector then builds featherweight instances, never loading payloads.
            _, per_model = Job.objects.filter(pk__in=ids).only("pk").delete()
            gone = [r for r in rows if r[0] in ids]
            queued = [r for r in gone if r[3] in PENDING_STATUSES]
            _pipeline_on_commit(_removals([(topic, pk, entity) for pk, topic, entity, _ in queued]))
        result.changed += per_model.get(Job._meta.label, 0)
    return result
