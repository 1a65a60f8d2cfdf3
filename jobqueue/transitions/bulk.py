"""The people-driven transitions on any number of jobs, a chunk at a time.

An admin action on "all 100,000 matching" must neither build 100,000 model
instances nor hold one huge transaction. So ids are read a chunk at a time
(``values_list`` only, see :func:`chunks`), each chunk changes with one guarded
``UPDATE`` (:func:`.guard.move_many`: a worker that took a job in between keeps it),
and Redis hears about the chunk in one pipeline once its transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..models import PENDING_STATUSES, Job, JobStatus
from ..signals import job_finished
from ..validation import validate_priority
from . import effects, followups
from .guard import move_many, rows
from .hooks import hooks
from .manual import requeue_values
from .table import TRANSITIONS

#: Jobs read and changed per statement.
CHUNK_SIZE = 1000


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


def _winners(chunk: list[tuple[Any, ...]], updated: int, marker: Any, **state: Any) -> list[tuple[Any, ...]]:
    """The rows the guarded UPDATE changed: all of them, unless a worker won a few of the
    races; those are found by the ``updated_at`` value only this UPDATE wrote."""
    if updated == len(chunk):
        return chunk
    ids = [r[0] for r in chunk]
    won = set(Job.objects.filter(pk__in=ids, updated_at=marker, **state).values_list("pk", flat=True))
    return [r for r in chunk if r[0] in won]


def _finished(chunk: Sequence[tuple[Any, ...]], has_dependents_index: int) -> None:
    """The follow-ups of the chunk's jobs that have any (every job, if users listen or
    a hook is attached)."""
    if job_finished.has_listeners(Job) or len(hooks):
        ids = [r[0] for r in chunk]
    else:
        ids = [r[0] for r in chunk if r[has_dependents_index]]
    for job in Job.objects.filter(pk__in=ids).defer("payload", "result"):
        followups.finished(job)


def _sources(name: str) -> list[str]:
    return list(TRANSITIONS[name].sources)


def cancel(queryset: QuerySet, reason: str = "cancelled", chunk_size: int | None = None) -> BulkResult:
    """``cancel`` the pending jobs of ``queryset`` and ask its running ones to ``abort``."""
    result = BulkResult()
    pending = queryset.filter(status__in=_sources("cancel"))
    for chunk in chunks(pending, "topic_id", "entity_id", "has_dependents", "key", chunk_size=chunk_size):
        now = timezone.now()
        with transaction.atomic(using=_db()):
            updated = move_many("cancel", [r[0] for r in chunk], finished_at=now, error=reason, updated_at=now)
            won = _winners(chunk, updated, now, status=JobStatus.CANCELLED)
            items = [(topic, pk, entity, key) for pk, topic, entity, _, key in won]
            effects.pipeline_after_commit(effects.removals(items))
            _finished(won, 3)
        result.changed += len(won)
    running = queryset.filter(status=JobStatus.RUNNING)
    for chunk in chunks(running, "topic_id", chunk_size=chunk_size):
        effects.pipeline_after_commit(effects.abort_requests(chunk))
        result.aborting += len(chunk)
    return result


def requeue(queryset: QuerySet, chunk_size: int | None = None) -> BulkResult:
    """``requeue`` the failed and cancelled jobs of ``queryset``."""
    result = BulkResult()
    candidates = queryset.filter(status__in=_sources("requeue"))
    for chunk in chunks(candidates, "topic_id", "priority", "entity_id", chunk_size=chunk_size):
        now = timezone.now()
        values = {**requeue_values(), "queued_at": now, "updated_at": now}
        with transaction.atomic(using=_db()):
            try:
                with transaction.atomic(using=_db()):
                    updated = move_many("requeue", [r[0] for r in chunk], **values)
                won = _winners(chunk, updated, now, status=JobStatus.QUEUED)
            except IntegrityError:
                # Some entity id is active again in a newer job: requeue the others one by one.
                won = []
                for row in chunk:
                    try:
                        with transaction.atomic(using=_db()):
                            if move_many("requeue", [row[0]], **values):
                                won.append(row)
                    except IntegrityError:
                        result.conflicts += 1
            effects.pipeline_after_commit(effects.pushes(won))
        result.changed += len(won)
    return result


def run_now(queryset: QuerySet, chunk_size: int | None = None) -> BulkResult:
    """``run_now``: queue the scheduled jobs of ``queryset`` now, instead of at their ``run_after``."""
    result = BulkResult()
    scheduled = queryset.filter(status__in=_sources("run_now"))
    for chunk in chunks(scheduled, "topic_id", "priority", "entity_id", chunk_size=chunk_size):
        now = timezone.now()
        with transaction.atomic(using=_db()):
            updated = move_many("run_now", [r[0] for r in chunk], queued_at=now, run_after=None, updated_at=now)
            won = _winners(chunk, updated, now, status=JobStatus.QUEUED)
            effects.pipeline_after_commit(effects.pushes(won))
        result.changed += len(won)
    return result


def set_priority(queryset: QuerySet, priority: int, chunk_size: int | None = None) -> BulkResult:
    """Change the priority of the pending jobs of ``queryset``, in the rows and the queues."""
    validate_priority(priority)
    result = BulkResult()
    pending = queryset.filter(status__in=PENDING_STATUSES)
    for chunk in chunks(pending, "topic_id", chunk_size=chunk_size):
        now = timezone.now()
        with transaction.atomic(using=_db()):
            updated = rows("set_priority", ids=[r[0] for r in chunk]).update(priority=priority, updated_at=now)
            won = _winners(chunk, updated, now)
            effects.pipeline_after_commit(effects.priority_changes(won, priority))
        result.changed += len(won)
    return result
