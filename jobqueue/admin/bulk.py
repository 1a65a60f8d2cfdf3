"""Bulk changes from the admin: the transitions on querysets live in
:mod:`jobqueue.transitions.bulk`; deleting (no transition: the rows go) is here.
"""

from __future__ import annotations

from django.db import router, transaction
from django.db.models import QuerySet

from ..models import PENDING_STATUSES, Job, JobStatus
from ..transitions import effects
from ..transitions.bulk import CHUNK_SIZE, BulkResult, cancel, chunks, requeue, run_now, set_priority

__all__ = ["CHUNK_SIZE", "BulkResult", "cancel", "chunks", "delete", "requeue", "run_now", "set_priority"]


def _db() -> str:
    return router.db_for_write(Job)


def delete(queryset: QuerySet, chunk_size: int | None = None) -> BulkResult:
    """Delete the jobs of ``queryset`` that are not running (with their executions).

    A running job is left alone: its worker still owns it; cancel it first.
    """
    result = BulkResult()
    candidates = queryset.exclude(status=JobStatus.RUNNING)
    for rows in chunks(candidates, "topic_id", "entity_id", "status", "key", chunk_size=chunk_size):
        with transaction.atomic(using=_db()):
            locked = Job.objects.filter(pk__in=[r[0] for r in rows]).exclude(status=JobStatus.RUNNING)
            if transaction.get_connection(_db()).features.has_select_for_update:
                locked = locked.select_for_update()
            ids = set(locked.values_list("pk", flat=True))
            # only("pk"): the collector then builds featherweight instances, never loading payloads.
            _, per_model = Job.objects.filter(pk__in=ids).only("pk").delete()
            gone = [r for r in rows if r[0] in ids]
            queued = [r for r in gone if r[3] in PENDING_STATUSES]
            items = [(topic, pk, entity, key) for pk, topic, entity, _, key in queued]
            effects.pipeline_after_commit(effects.removals(items))
        result.changed += per_model.get(Job._meta.label, 0)
    return result
