"""The database side of an attempt: claim, succeed, fail or retry, lose, abort.

Each step is one transaction whose ``UPDATE`` guards the state it leaves and the
attempt it closes (``WHERE status = 'running' AND attempts = n``), so a worker
whose job was reclaimed after a lost lease can never overwrite the new attempt.
Redis is told only after the commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import socket
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from .. import engine
from .. import statements as sql
from ..chaining import next_jobs, storable_result
from ..conf import settings
from ..models import Execution, ExecutionOutcome, Job, JobStatus
from ..progress import flush_progress
from ..signals import job_failed, job_started, job_succeeded, quiet_success, send_finished
from ..storable import exception_text, storable_json, storable_text

logger = logging.getLogger("jobqueue.worker")

HOSTNAME = socket.gethostname()


@dataclass
class NextJob:
    """A worker's offer to claim its next job in the statement that records a success.

    ``lease`` leases the next job id in Redis (``None``: nothing to run next); after
    the statement, ``claimed`` holds the started job, or ``id`` the leased id that
    could not be claimed (cancelled meanwhile). Neither is set if no statement ran.
    ``stranded`` says the job was claimed but could not be started (a ``job_started``
    receiver raised): as after any claim, its lease recovers it.
    """

    lease: Callable[[], str | None]
    worker_id: str
    pid: int
    topics: dict[str, Any]
    id: str | None = None
    claimed: tuple[Job, Execution] | None = None
    stranded: bool = False


@dataclass
class Outcome:
    """What running a handler produced (inline or in a child process)."""

    ok: bool
    result: Any = None
    error: str = ""
    traceback: str = ""
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    aborted: bool = False  # cancelled by job.cancel()
    interrupted: bool = False  # the worker was told to stop now (second signal)
    retry_delay: float | None = None  # the handler raised Retry(delay=...)
    extra: dict[str, Any] = field(default_factory=dict)


def claim(job_id: str, worker_id: str, pid: int, topics: dict[str, Any] | None = None) -> tuple[Job, Execution] | None:
    """Mark a popped job running; ``None`` if it is not claimable (cancelled or
    deleted since it was queued).

    Returns the job and its (unsaved) Execution: the row is written once, when the
    attempt ends, or by the reaper as ``lost`` if the worker dies first. ``topics``
    is the worker's cache of Topic rows, saving a query per job.
    """
    now = timezone.now()
    job = sql.claim_job(job_id, worker_id, now) if _can_return() else _claim_two_step(job_id, worker_id, now)
    if job is None:
        return None
    return _started(job, worker_id, pid, topics, now)


def _started(job: Job, worker_id: str, pid: int, topics: dict[str, Any] | None, now: Any) -> tuple[Job, Execution]:
    """A claimed job and its new (unsaved) Execution; ``job_started`` is sent."""
    topic = (topics or {}).get(job.topic_id)
    if topic is not None:
        job.topic = topic
    execution = Execution(
        job=job, attempt=_execution_number(job), worker_id=worker_id, hostname=HOSTNAME, pid=pid, started_at=now
    )
    job_started.send(sender=Job, job=job)
    return job, execution


def _execution_number(job: Job) -> int:
    """The number of the attempt now running, for its Execution row.

    It is ``job.attempts`` unless earlier Execution rows already use that number:
    a requeue resets ``attempts`` and an aborted attempt is not counted, while every
    Execution row is kept (numbered in order, one per attempt ever made).
    """
    last = getattr(job, "last_execution", None)
    if last is None:
        last = Execution.objects.filter(job_id=job.pk).aggregate(last=Max("attempt"))["last"] or 0
    return max(job.attempts, last + 1)


_CLAIMABLE = (JobStatus.QUEUED, JobStatus.SCHEDULED)


def _can_return() -> bool:
    return bool(connection.features.can_return_rows_from_bulk_insert)


def _claim_two_step(job_id: str, worker_id: str, now: Any) -> Job | None:
    with transaction.atomic():
        won = Job.objects.filter(pk=job_id, status__in=_CLAIMABLE).update(
            status=JobStatus.RUNNING,
            attempts=F("attempts") + 1,
            started_at=now,
            finished_at=None,
            worker_id=worker_id,
            updated_at=now,
        )
        return Job.objects.get(pk=job_id) if won else None


def _fill_execution(execution: Execution, outcome: Outcome, result_outcome: str) -> None:
    now = timezone.now()
    execution.finished_at = now
    execution.outcome = result_outcome
    execution.duration = (now - execution.started_at).total_seconds()
    # A handler running a subprocess may have set the exit code on the execution itself.
    execution.exit_code = outcome.exit_code if outcome.exit_code is not None else execution.exit_code
    limit = settings.MAX_OUTPUT_BYTES
    execution.stdout = storable_text((outcome.stdout or execution.stdout or "")[-limit:])
    execution.stderr = storable_text((outcome.stderr or execution.stderr or "")[-limit:])
    execution.error = storable_text(outcome.error)
    execution.traceback = storable_text(outcome.traceback)


def _close_execution(execution: Execution, outcome: Outcome, result_outcome: str) -> None:
    _fill_execution(execution, outcome, result_outcome)
    sql.insert_execution(execution)


def _running(job: Job) -> Any:
    return Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)


def backoff_delay(job: Job, attempt: int) -> float:
    """Exponential backoff with +/-25 % jitter: base * 2^(attempt-1), capped."""
    base = float(job.topic.retry_backoff if job.topic_id else settings.DEFAULT_RETRY_BACKOFF)
    delay = min(base * (2 ** max(attempt - 1, 0)), float(settings.MAX_RETRY_DELAY))
    return max(0.0, delay * random.uniform(0.75, 1.25))


def finish(job: Job, execution: Execution, outcome: Outcome, defer_ack: bool = False,
           next_job: NextJob | None = None) -> str:
    """Record an attempt's outcome; returns the job's new status (or ``"lost"`` if the
    job was no longer ours).

    With ``defer_ack`` a success is not acknowledged in Redis: the caller does it
    (the worker fuses it with its next pop). Until then the lease stands, so a crash
    in between only makes the reaper acknowledge the finished job.

    With ``next_job``, a success that nothing follows also claims the worker's next
    job, in the same statement (PostgreSQL): see :class:`NextJob`.
    """
    # An inline handler's last progress report may still be held back by the throttle.
    flush_progress(job)
    if outcome.ok and not outcome.aborted:
        try:
            result = storable_json(storable_result(outcome.result))
        except (TypeError, ValueError) as exc:
            outcome = Outcome(ok=False, error=f"Handler returned a result that is not JSON: {exc}",
                              exit_code=outcome.exit_code, stdout=outcome.stdout, stderr=outcome.stderr)
        else:
            before = (job.status, job.result, job.finished_at, job.progress)
            try:
                return _succeed(job, execution, outcome, result, defer_ack, next_job)
            except (OperationalError, InterfaceError):
                raise  # the worker retries while the database is unreachable
            except Exception as exc:
                # A successor that cannot be created (or a failing receiver) rolled the
                # success back: the attempt fails with the reason instead.
                job.status, job.result, job.finished_at, job.progress = before
                logger.warning("Job %s succeeded but its success could not be recorded: %s", job.pk, exc)
                outcome = Outcome(ok=False, error=f"The success could not be recorded: {exception_text(exc)}",
                                  traceback=traceback.format_exc(), exit_code=outcome.exit_code,
                                  stdout=outcome.stdout, stderr=outcome.stderr)
    if outcome.aborted:
        return _cancel(job, execution, outcome)
    if outcome.interrupted:
        return _interrupt(job, execution, outcome)
    return _fail(job, execution, outcome)


def _succeed(job: Job, execution: Execution, outcome: Outcome, result: Any, defer_ack: bool = False,
             next_job: NextJob | None = None) -> str:
    now = timezone.now()
    if not next_jobs(outcome.result) and not (job.topic.next_topic or job.has_dependents) and quiet_success(job):
        # Nothing follows this job and nobody listens: one statement records both rows
        # (and, given the worker's next job, claims it too).
        _fill_execution(execution, outcome, ExecutionOutcome.SUCCEEDED)
        next_id = next_job.lease() if next_job is not None and sql.can_succeed_and_claim() else None
        if next_id is not None and next_id != str(job.pk):
            assert next_job is not None
            started = timezone.now()  # after this attempt's end: attempts of a slot never overlap
            won, claimed = sql.succeed_and_claim(job, result, now, execution, next_id, next_job.worker_id, started)
            next_job.id = next_id
            if claimed is not None:
                try:
                    next_job.claimed = _started(claimed, next_job.worker_id, next_job.pid, next_job.topics, started)
                except Exception:
                    # This job's success stands; the next one is left to its lease, as a
                    # claim whose job_started receiver fails is.
                    logger.exception("Job %s was claimed but could not be started.", claimed.pk)
                    next_job.stranded = True
        else:
            won = sql.succeed_with_execution(job, result, now, execution)
        if not won:
            return _not_ours(job, execution, outcome)
    else:
        with transaction.atomic():
            if not sql.mark_succeeded(job, result, now):
                return _not_ours(job, execution, outcome)
            job.status, job.result, job.finished_at, job.progress = JobStatus.SUCCEEDED, result, now, 100
            _close_execution(execution, outcome, ExecutionOutcome.SUCCEEDED)
            # Successors are created in this same transaction: never a success without them.
            job_succeeded.send(sender=Job, job=job, result=outcome.result)
            send_finished(job)
    job.status, job.result, job.finished_at, job.progress = JobStatus.SUCCEEDED, result, now, 100
    if not defer_ack:
        engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id)
    return JobStatus.SUCCEEDED


def _fail(job: Job, execution: Execution, outcome: Outcome) -> str:
    now = timezone.now()
    retry = job.attempts < job.max_attempts
    if outcome.retry_delay is not None:
        delay = max(0.0, float(outcome.retry_delay))
    else:
        delay = backoff_delay(job, job.attempts)
    exec_outcome = ExecutionOutcome.TIMEOUT if outcome.timed_out else (
        ExecutionOutcome.RETRY if retry else ExecutionOutcome.FAILED
    )
    error = storable_text(outcome.error) or "failed"
    with transaction.atomic():
        if retry:
            run_after = now + dt.timedelta(seconds=delay)
            won = _running(job).update(
                status=JobStatus.SCHEDULED, run_after=run_after, error=error, worker_id="", updated_at=now
            )
            status = JobStatus.SCHEDULED
        else:
            won = _running(job).update(status=JobStatus.FAILED, error=error, finished_at=now, updated_at=now)
            status = JobStatus.FAILED
            run_after = None
        if not won:
            return _not_ours(job, execution, outcome)
        job.status, job.error, job.run_after = status, error, run_after
        if status == JobStatus.FAILED:
            job.finished_at = now
        _close_execution(execution, outcome, exec_outcome)
        job_failed.send(sender=Job, job=job, error=error, will_retry=retry)
        if status == JobStatus.FAILED:
            send_finished(job)
    if retry:
        assert run_after is not None
        engine.safe_call(
            engine.schedule, job.topic_id, [(str(job.pk), run_after.timestamp(), job.priority, job.entity_id)]
        )
        logger.info("Job %s failed (attempt %s/%s), retrying in %.1fs: %s", job.pk, job.attempts,
                    job.max_attempts, delay, error.splitlines()[0] if error else "")
    else:
        engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id)
        logger.warning("Job %s failed after %s attempt(s): %s", job.pk, job.attempts, error)
    return status


def _cancel(job: Job, execution: Execution, outcome: Outcome) -> str:
    now = timezone.now()
    with transaction.atomic():
        won = _running(job).update(
            status=JobStatus.CANCELLED, finished_at=now, error="cancelled while running", updated_at=now
        )
        if not won:
            return _not_ours(job, execution, outcome)
        job.status, job.finished_at = JobStatus.CANCELLED, now
        _close_execution(execution, outcome, ExecutionOutcome.CANCELLED)
        send_finished(job)
    engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id)
    return JobStatus.CANCELLED


def _interrupt(job: Job, execution: Execution, outcome: Outcome) -> str:
    """The worker was stopped mid-job: the attempt is aborted and does not count."""
    now = timezone.now()
    with transaction.atomic():
        won = _running(job).update(
            status=JobStatus.QUEUED, attempts=F("attempts") - 1, queued_at=now, worker_id="", updated_at=now
        )
        if not won:
            return _not_ours(job, execution, outcome)
        job.status = JobStatus.QUEUED
        job.attempts -= 1
        outcome.error = outcome.error or "aborted: the worker was stopped"
        _close_execution(execution, outcome, ExecutionOutcome.ABORTED)
    engine.safe_call(engine.push_job, job)
    return JobStatus.QUEUED


def unclaim(job: Job) -> bool:
    """Queue again a job this worker claimed but never started (it stopped first): the
    attempt is not counted and leaves no Execution row. False if the job moved on."""
    now = timezone.now()
    won = _running(job).update(
        status=JobStatus.QUEUED, attempts=F("attempts") - 1, started_at=None, worker_id="", updated_at=now
    )
    if won:
        job.status, job.attempts, job.started_at, job.worker_id = JobStatus.QUEUED, job.attempts - 1, None, ""
        engine.safe_call(engine.push_job, job)
    return bool(won)


def _not_ours(job: Job, execution: Execution, outcome: Outcome) -> str:
    """The row moved on without us (our lease expired and the job was reclaimed)."""
    logger.warning("Job %s attempt %s finished after it was reclaimed; result discarded.", job.pk, job.attempts)
    if not Execution.objects.filter(job=job, attempt=execution.attempt).exists():
        _close_execution(execution, outcome, ExecutionOutcome.LOST)
    return "lost"


def recover(topic: str, job_id: str) -> str:
    """Handle a job whose lease expired (its worker died or hung).

    Running → its open Execution is marked lost and the job requeued (the attempt
    counts) or failed if no attempts are left. A job already finished (the worker
    died between commit and acknowledgement) is only acknowledged.
    """
    try:
        uuid.UUID(job_id)
    except ValueError:
        engine.ack(topic, job_id)
        return "dropped"
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first() if _can_lock() else (
            Job.objects.filter(pk=job_id).first()
        )
        if job is None:
            engine.ack(topic, job_id)
            return "dropped"
        if job.status != JobStatus.RUNNING:
            status = job.status
            if status == JobStatus.QUEUED:
                transaction.on_commit(lambda: engine.push_job(job))
            elif status == JobStatus.SCHEDULED:
                transaction.on_commit(lambda: engine.push_jobs([job]))
            else:
                transaction.on_commit(lambda: engine.ack(topic, job_id, job.entity_id))
            return f"already {status}"
        Execution.objects.get_or_create(
            job=job,
            attempt=_execution_number(job),
            defaults={
                "outcome": ExecutionOutcome.LOST,
                "worker_id": job.worker_id,
                "started_at": job.started_at or now,
                "finished_at": now,
                "error": "lease expired: the worker stopped responding",
            },
        )
        if job.attempts < job.max_attempts:
            Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                status=JobStatus.QUEUED, queued_at=now, worker_id="", updated_at=now
            )
            job.status = JobStatus.QUEUED
            transaction.on_commit(lambda: engine.push_job(job))
            result = "requeued"
        else:
            error = "lost: the worker stopped responding and no attempts are left"
            Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                status=JobStatus.FAILED, finished_at=now, error=error, updated_at=now
            )
            job.status, job.error, job.finished_at = JobStatus.FAILED, error, now
            job_failed.send(sender=Job, job=job, error=error, will_retry=False)
            send_finished(job)
            transaction.on_commit(lambda: engine.ack(topic, job_id, job.entity_id))
            result = "failed"
    logger.warning("Recovered job %s of topic %s from an expired lease: %s", job_id, topic, result)
    return result


def _can_lock() -> bool:
    from django.db import connection

    return bool(connection.features.has_select_for_update)
