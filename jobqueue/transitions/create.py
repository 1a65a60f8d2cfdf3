"""``enqueue``: a new job's row, then its Redis push once the row commits.

``Job.objects.enqueue()`` validates, dedupes and builds the job (it is the public
face of this transition); this module writes it and tells Redis and the listeners.
"""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from .. import engine
from ..conf import settings
from ..logging import job_extra
from ..models import Job, JobStatus
from ..signals import job_enqueued
from . import fastsql

logger = logging.getLogger("jobqueue")


def insert(job: Job, using: str, *, fast: bool = True) -> None:
    """Write a new job's row: the fast ``insert_job`` statement, or ``save()`` (needed
    where a unique constraint may refuse the row inside a savepoint)."""
    if fast and fastsql.enabled(using):
        fastsql.insert_job(job, using)
    else:
        job.save(force_insert=True, using=using)


def created(jobs: list[Job], using: str) -> None:
    """The rows of ``jobs`` were written: announce them, and push the queued and
    scheduled ones when the transaction commits."""
    if job_enqueued.has_listeners(Job):
        for job in jobs:
            job_enqueued.send(sender=Job, job=job)
    pushable = [job for job in jobs if job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED)]
    if pushable:
        transaction.on_commit(lambda: push_committed(pushable), using=using)


def push_committed(jobs: list[Job]) -> None:
    """Push jobs whose rows just committed. If Redis cannot be reached, the jobs are safe
    in the database and a worker pushes them within about ``RECONCILE_SECONDS`` (no retry
    here: a blip outlasts an immediate one, and the caller's request should not wait)."""
    try:
        if len(jobs) == 1:
            engine.push_job(jobs[0])
        else:
            engine.push_jobs(jobs)
    except redis.RedisError as exc:
        shown = ", ".join(str(job.pk) for job in jobs[:3]) + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
        logger.warning("Redis unavailable after committing job(s) %s (%s): they are kept in the database, and "
                       "a worker pushes them within about %s s (a scheduled job once it is due).",
                       shown, exc, settings.RECONCILE_SECONDS, extra=job_extra(jobs[0]) if len(jobs) == 1 else None)
