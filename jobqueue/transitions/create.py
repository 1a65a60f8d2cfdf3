"""``enqueue``: a new job's row, then its Redis push once the row commits.

``Job.objects.enqueue()`` validates, dedupes and builds the job (it is the public
face of this transition); this module writes it and tells Redis and the listeners.
The push also counts the job as enqueued in its topic's metrics; a job created waiting
for dependencies, which no queue holds yet, is only counted.
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

#: The metrics tally of one new job.
ENQUEUED = engine.tally("enqueued")


def insert(job: Job, using: str, *, fast: bool = True) -> None:
    """Write a new job's row: the fast ``insert_job`` statement, or ``save()`` (needed
    where a unique constraint may refuse the row inside a savepoint)."""
    if fast and fastsql.enabled(using):
        fastsql.insert_job(job, using)
    else:
        job.save(force_insert=True, using=using)


def created(jobs: list[Job], using: str) -> None:
    """The rows of ``jobs`` were written: announce them, and push the queued and
    scheduled ones when the transaction commits (counting them all as enqueued)."""
    if job_enqueued.has_listeners(Job):
        for job in jobs:
            job_enqueued.send(sender=Job, job=job)
    if jobs:
        transaction.on_commit(lambda: push_committed(jobs), using=using)


def push_committed(jobs: list[Job]) -> None:
    """Push jobs whose rows just committed. If Redis cannot be reached, the jobs are safe
    in the database and a worker pushes them within about ``RECONCILE_SECONDS`` (no retry
    here: a blip outlasts an immediate one, and the caller's request should not wait)."""
    try:
        if len(jobs) == 1 and jobs[0].status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            engine.push_job(jobs[0], ENQUEUED)
        else:
            engine.push_jobs(jobs, enqueued=True)
    except redis.RedisError as exc:
        shown = ", ".join(str(job.pk) for job in jobs[:3]) + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
        logger.warning("Redis unavailable after committing job(s) %s (%s): they are kept in the database, and "
                       "a worker pushes them within about %s s (a scheduled job once it is due).",
                       shown, exc, settings.RECONCILE_SECONDS, extra=job_extra(jobs[0]) if len(jobs) == 1 else None)
