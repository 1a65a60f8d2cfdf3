"""The transitions no person asks for: ``promote`` a due scheduled job, and ``lose`` a
running job whose worker stopped renewing its lease (run by any worker's maintenance).
A lost attempt is counted in the topic's metrics by the Redis call that requeues or
acknowledges the job."""

from __future__ import annotations

import logging
import time
import uuid

from django.db import connection, transaction
from django.utils import timezone

from .. import engine
from ..logging import job_extra
from ..models import Execution, ExecutionOutcome, Job, JobStatus
from . import fastsql, followups
from .attempt import execution_number, waited
from .guard import move, move_many

logger = logging.getLogger("jobqueue.worker")


def promote(topic: str) -> int:
    """``promote``: queue the scheduled jobs of ``topic`` that are due (Redis moves them
    first, atomically); returns how many."""
    ids = engine.promote_due(topic)
    if ids:
        now = timezone.now()
        move_many("promote", ids, queued_at=now, updated_at=now)
    return len(ids)


def recover(topic: str, job_id: str) -> str:
    """Handle a job whose lease expired (its worker died or hung).

    Running -> ``lose``: its open Execution is marked lost and the job requeued (the
    attempt counts) or failed if no attempts are left. A job already finished (the
    worker died between commit and acknowledgement) is only acknowledged; a queued or
    scheduled one is put back where it belongs.
    """
    try:
        uuid.UUID(job_id)
    except ValueError:
        engine.ack(topic, job_id)
        return "dropped"
    now = timezone.now()
    with transaction.atomic():
        found = Job.objects.filter(pk=job_id)
        job = (found.select_for_update() if connection.features.has_select_for_update else found).first()
        if job is None:
            engine.ack(topic, job_id)
            return "dropped"
        if job.status != JobStatus.RUNNING:
            _put_back(job, topic)
            return f"already {job.status}"
        Execution.objects.get_or_create(
            job=job,
            attempt=execution_number(job),
            defaults={
                "outcome": ExecutionOutcome.LOST,
                "worker_id": job.worker_id,
                "started_at": job.started_at or now,
                "finished_at": now,
                "error": "lease expired: the worker stopped responding",
            },
        )
        wait = waited(job)  # the run time of a lost attempt is unknown
        if job.attempts < job.max_attempts:
            move(job, "lose", JobStatus.QUEUED, queued_at=now, worker_id="", updated_at=now)
            tally = engine.tally("lost", wait=wait)
            transaction.on_commit(lambda: engine.push_job(job, tally))
            result = "requeued"
        else:
            error = "lost: the worker stopped responding and no attempts are left"
            move(job, "lose", JobStatus.FAILED, finished_at=now, error=error, updated_at=now)
            followups.failed(job, error, will_retry=False)
            tally = engine.tally("lost", "failed", wait=wait)
            transaction.on_commit(lambda: engine.ack(topic, job_id, job.entity_id, tally))
            result = "failed"
    logger.warning("Recovered job %s of topic %s from an expired lease: %s", job_id, topic, result,
                   extra=job_extra(job))
    return result


def give_back(topic: str, job_id: str) -> str:
    """Hand back a job leased for a worker that never started it (it stopped first, or
    could not claim it): still queued, it goes back in its queue; finished, cancelled or
    gone, it is only acknowledged. A job running is left alone: another worker claimed
    it (a loss of Redis's data gave its id out again), and the lease is that worker's.

    A job pushed while its row was being inserted (see ``create.insert_plain``) may be
    leased before the row commits, or before its ``INSERT`` has even run: that statement
    is waited for first, and a row not there yet is looked for again after each of
    :data:`ROW_PAUSES`, so such a job goes back in its queue rather than being dropped.
    """
    job = None
    try:
        pk = uuid.UUID(job_id)
    except ValueError:
        pk = None
    if pk is not None:
        job = _row_once_inserted(pk)
    if job is None:
        engine.ack(topic, job_id)
        return "dropped"
    if job.status == JobStatus.RUNNING:
        return "running"
    _put_back(job, topic)
    return f"already {job.status}"


#: Pauses (seconds) of a give-back that finds no row for a job that may have been pushed
#: during its ``INSERT``, before it looks again: a claim can come before that statement has
#: even run (its server process not yet scheduled on a busy machine), and then nothing
#: holds the lock it would wait for. About a quarter of a second in all; a row still not
#: there then is left to the reconcile.
ROW_PAUSES = (0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)


def _row_once_inserted(pk: uuid.UUID) -> Job | None:
    """Job ``pk``'s row, once an ``INSERT`` of it that may be running has committed."""
    fastsql.wait_for_insert(pk)
    job = Job.objects.filter(pk=pk).first()
    if job is not None or not fastsql.may_be_inserting(pk):
        return job
    for pause in ROW_PAUSES:
        time.sleep(pause)
        fastsql.wait_for_insert(pk)
        job = Job.objects.filter(pk=pk).first()
        if job is not None:
            break
    return job


def _put_back(job: Job, topic: str) -> None:
    """A job whose lease expired but that is not running: only Redis needs repair."""
    if job.status == JobStatus.QUEUED:
        transaction.on_commit(lambda: engine.push_job(job))
    elif job.status == JobStatus.SCHEDULED:
        transaction.on_commit(lambda: engine.push_jobs([job]))
    else:
        transaction.on_commit(lambda: engine.ack(topic, str(job.pk), job.entity_id))
