"""The worker's transitions: ``claim`` a job, then end the attempt with ``succeed``,
``retry``, ``fail``, ``abort`` or ``interrupt`` (or ``unclaim`` one never started).

Each is one transaction whose ``UPDATE`` guards the state it leaves and the attempt
it closes (``WHERE status = 'running' AND attempts = n``), so a worker whose job was
reclaimed after a lost lease can never overwrite the new attempt; Redis is told only
after the commit. The attempt's :class:`~jobqueue.models.Execution` row arrives filled
in (by the worker, from what the handler did) and is written with the job's row.

Each end of an attempt also counts it in the topic's metrics (:func:`tally_of`), in the
Redis call that acknowledges or reschedules the job: no extra round trip.

``claim`` and ``succeed`` have a fast path (:mod:`.fastsql`): when nothing follows a
success (:func:`.followups.quiet`) one statement records it with its Execution row.
On PostgreSQL a worker with a backlog goes further (:class:`NextJob`): it claims its
next few jobs in one statement, holds their successes as they come, and records them
all with the statement that claims the next few (:func:`record_held`): one statement
per few jobs, as Oban's and River's batched fetches and completions do. A held success
is recorded before the worker waits, stops, or holds it longer than its batch took to
run; until then its lease stands, so a worker killed meanwhile leaves it to be run
again, as any attempt it had not recorded.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from .. import engine
from ..constants import MAX_PROGRESS
from ..logging import job_extra
from ..managers import build_instance, model_defaults
from ..models import Execution, ExecutionOutcome, Job, JobStatus
from . import fastsql, followups
from .guard import move, rows

logger = logging.getLogger("jobqueue.worker")

HOSTNAME = socket.gethostname()


#: What ``succeed`` returns for a success the worker holds, to record with a later one.
HELD = "held"


@dataclass
class NextJob:
    """A worker's offer, with the attempt it ends: record the successes it holds and
    claim its next jobs in the same statement (PostgreSQL, see :func:`record_held`).

    ``lease`` leases the ids of the next jobs in Redis (empty: nothing to run next).
    ``held`` is the worker's list of successes it ran and has not recorded yet; with
    ``may_hold`` (the worker has claimed jobs to run first) a quiet success joins them
    instead of being recorded now. After a statement ran: ``ids`` are the leased ids,
    ``claimed`` the started jobs (in lease order), ``recorded`` the jobs whose success it
    recorded (to acknowledge in Redis), ``stranded`` the ids claimed but not started (a
    ``job_started`` receiver raised: as after any claim, their lease recovers them).
    """

    lease: Callable[[], list[str]]
    worker_id: str
    pid: int
    topics: dict[str, Any]
    held: list[tuple[Job, Any, Execution]] = field(default_factory=list)
    may_hold: bool = False
    ids: list[str] = field(default_factory=list)
    claimed: list[tuple[Job, Execution]] = field(default_factory=list)
    recorded: list[Job] = field(default_factory=list)
    stranded: set[str] = field(default_factory=set)


# -- claim -------------------------------------------------------------------------------


def claim(job_id: str, worker_id: str, pid: int, topics: dict[str, Any] | None = None) -> tuple[Job, Execution] | None:
    """``claim``: mark a popped job running; ``None`` if it is not claimable (cancelled
    or deleted since it was queued).

    Returns the job and its (unsaved) Execution: the row is written once, when the
    attempt ends, or by the reaper as ``lost`` if the worker dies first. ``topics``
    is the worker's cache of Topic rows, saving a query per job.
    """
    now = timezone.now()
    job = fastsql.claim_job(job_id, worker_id, now) if fastsql.enabled() else _claim_orm(job_id, worker_id, now)
    if job is None:
        return None
    return _started(job, worker_id, pid, topics, now)


def _claim_orm(job_id: str, worker_id: str, now: Any) -> Job | None:
    """The ORM twin of the fast ``claim`` statement."""
    with transaction.atomic():
        won = rows("claim", pk=job_id).update(
            status=JobStatus.RUNNING, attempts=F("attempts") + 1, started_at=now, finished_at=None,
            worker_id=worker_id, updated_at=now,
        )
        return Job.objects.get(pk=job_id) if won else None


#: The foreign keys whose cache :func:`_started` fills (looked up once: reading a
#: descriptor from its class is a call).
_JOB_TOPIC, _EXECUTION_JOB = Job.topic.field, Execution.job.field


def _started(job: Job, worker_id: str, pid: int, topics: dict[str, Any] | None, now: Any) -> tuple[Job, Execution]:
    """A claimed job and its new (unsaved) Execution; its start is announced."""
    topic = (topics or {}).get(job.topic_id)
    if topic is not None:  # the row of job.topic_id: cached as the descriptor's assignment would
        _JOB_TOPIC.set_cached_value(job, topic)
    execution = build_instance(Execution, {
        **_new_execution(), "job_id": job.pk, "attempt": execution_number(job), "worker_id": worker_id,
        "hostname": HOSTNAME, "pid": pid, "started_at": now,
    })
    _EXECUTION_JOB.set_cached_value(execution, job)
    followups.started(job)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("Job %s of topic %s started (attempt %s/%s).", job.pk, job.topic_id, job.attempts,
                     job.max_attempts, extra=job_extra(job))
    return job, execution


@functools.cache
def _new_execution() -> dict[str, Any]:
    """What a new Execution holds in the columns :func:`_started` does not set."""
    return model_defaults(Execution, frozenset({"job_id", "attempt", "worker_id", "hostname", "pid", "started_at"}))


def execution_number(job: Job) -> int:
    """The number of the attempt now running, for its Execution row.

    It is ``job.attempts`` unless earlier Execution rows already use that number:
    a requeue resets ``attempts`` and an aborted attempt is not counted, while every
    Execution row is kept (numbered in order, one per attempt ever made).
    """
    last = getattr(job, "last_execution", None)
    if last is None:
        last = Execution.objects.filter(job_id=job.pk).aggregate(last=Max("attempt"))["last"] or 0
    return max(job.attempts, last + 1)


# -- the end of an attempt ----------------------------------------------------------------


def succeed(job: Job, execution: Execution, result: Any, returned: Any, defer_ack: bool = False,
            next_job: NextJob | None = None) -> str:
    """``succeed``: record the storable ``result`` (the handler ``returned`` it) and the
    attempt's Execution row; returns ``"succeeded"``, or ``"lost"`` if the job was no
    longer this attempt's.

    With ``defer_ack`` Redis is not acknowledged: the caller does it (the worker fuses
    it with its next pop); until then the lease stands. With ``next_job``, a success
    that nothing follows is recorded with the worker's held successes by the statement
    that claims its next jobs (:func:`record_held`), or, when ``next_job.may_hold``,
    joins the held ones (``"held"`` is returned: nothing is written yet).
    """
    now = execution.finished_at or timezone.now()  # the job ends when its attempt did
    if fastsql.enabled() and followups.quiet(job, returned):
        if next_job is not None and fastsql.can_fuse():
            if next_job.may_hold:
                next_job.held.append((job, result, execution))
                return HELD
            won = str(job.pk) in record_held(next_job, (job, result, execution))
            if not defer_ack:
                for recorded in next_job.recorded:
                    engine.safe_call(engine.ack, recorded.topic_id, str(recorded.pk), recorded.entity_id,
                                     success_tally(recorded))
            return JobStatus.SUCCEEDED if won else "lost"
        if not fastsql.succeed_with_execution(job, result, now, execution):
            return not_ours(job, execution)
    else:
        with transaction.atomic():
            if fastsql.enabled():
                won = fastsql.mark_succeeded(job, result, now)
                if won:
                    job.status, job.result, job.finished_at, job.progress, job.error = (
                        JobStatus.SUCCEEDED, result, now, MAX_PROGRESS, "")
            else:
                won = move(job, "succeed", attempt=job.attempts, result=result, finished_at=now, progress=MAX_PROGRESS,
                           error="", updated_at=now)
            if not won:
                return not_ours(job, execution)
            write_execution(execution)
            # Successors are created in this same transaction: never a success without them.
            followups.succeeded(job, returned)
    job.status, job.result, job.finished_at, job.progress = JobStatus.SUCCEEDED, result, now, MAX_PROGRESS
    if next_job is not None:
        next_job.recorded.append(job)
    if not defer_ack:
        engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id, success_tally(job))
    return JobStatus.SUCCEEDED


def record_held(next_job: NextJob, *successes: tuple[Job, Any, Execution]) -> set[str]:
    """Record the successes ``next_job`` holds, and ``successes``, each with its
    Execution row, and claim the worker's next jobs (``next_job.lease``), in one
    statement (PostgreSQL only). Returns the ids whose success was recorded; the others
    were no longer their attempt's (:func:`not_ours`). On a database error nothing is
    recorded and the held successes stay held.
    """
    todo = [*next_job.held, *successes]
    mine = {str(job.pk) for job, _result, _execution in todo}
    ids = [job_id for job_id in next_job.lease() if job_id not in mine]  # a loss of Redis data may repeat one
    started = timezone.now()  # after these attempts' ends: attempts of a slot never overlap
    done, claimed = fastsql.record_and_claim(todo, ids, next_job.worker_id, started)
    next_job.held.clear()
    next_job.ids = ids
    for job, result, execution in todo:
        if str(job.pk) in done:
            job.status, job.result, job.finished_at = JobStatus.SUCCEEDED, result, execution.finished_at
            job.progress, job.error = MAX_PROGRESS, ""
            next_job.recorded.append(job)
        else:
            not_ours(job, execution)
    by_id = {str(row.pk): row for row in claimed}
    for job_id in ids:
        row = by_id.get(job_id)
        if row is None:
            continue
        try:
            next_job.claimed.append(_started(row, next_job.worker_id, next_job.pid, next_job.topics, started))
        except Exception:
            # The successes stand; this job is left to its lease, as a claim whose start
            # announcement fails is.
            logger.exception("Job %s was claimed but could not be started.", row.pk, extra=job_extra(row))
            next_job.stranded.add(job_id)
    return done


def fail(job: Job, execution: Execution, error: str, retry_at: dt.datetime | None) -> str:
    """``retry`` (scheduled again at ``retry_at``) or, without ``retry_at``, ``fail``;
    returns the job's new status, or ``"lost"``."""
    now = timezone.now()
    with transaction.atomic():
        if retry_at is not None:
            won = move(job, "retry", attempt=job.attempts, run_after=retry_at, error=error, worker_id="",
                       updated_at=now)
        else:
            won = move(job, "fail", attempt=job.attempts, error=error, finished_at=now, updated_at=now)
        if not won:
            return not_ours(job, execution)
        write_execution(execution)
        followups.failed(job, error, will_retry=retry_at is not None)
    if retry_at is not None:
        engine.safe_call(
            engine.schedule, job.topic_id, [(str(job.pk), retry_at.timestamp(), job.priority, job.entity_id)],
            tally=tally_of(job, "retried", end=now), keys={str(job.pk): job.key} if job.key else None,
        )
    else:
        engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id, tally_of(job, "failed", end=now))
    return job.status


def abort(job: Job, execution: Execution) -> str:
    """``abort``: a running job saw its cancel request; it ends ``cancelled``."""
    now = timezone.now()
    with transaction.atomic():
        if not move(job, "abort", attempt=job.attempts, finished_at=now, error="cancelled while running",
                    updated_at=now):
            return not_ours(job, execution)
        write_execution(execution)
        followups.finished(job)
    engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id, tally_of(job, end=now))
    return JobStatus.CANCELLED


def interrupt(job: Job, execution: Execution) -> str:
    """``interrupt``: the worker was stopped mid-job; the attempt is aborted and not counted."""
    now = timezone.now()
    with transaction.atomic():
        if not move(job, "interrupt", attempt=job.attempts, queued_at=now, worker_id="", updated_at=now,
                    attempts=F("attempts") - 1):
            return not_ours(job, execution)
        job.attempts -= 1
        write_execution(execution)
    engine.safe_call(engine.push_job, job)
    return JobStatus.QUEUED


def unclaim(job: Job) -> bool:
    """``unclaim``: queue again a job this worker claimed but never started (it stopped
    first): the attempt is not counted and leaves no Execution row. False if the job
    moved on."""
    won = move(job, "unclaim", attempt=job.attempts, started_at=None, worker_id="", updated_at=timezone.now(),
               attempts=F("attempts") - 1)
    if won:
        job.attempts -= 1
        engine.safe_call(engine.push_job, job)
    return won


def waited(job: Job) -> float | None:
    """Seconds the running attempt of ``job`` waited: from being queued (or due) to its start."""
    since = job.queued_at or job.run_after or job.created_at
    return (job.started_at - since).total_seconds() if job.started_at and since else None


def tally_of(job: Job, *counters: str, end: dt.datetime | None = None) -> str:
    """The metrics tally of ``job``'s attempt ending at ``end`` (default: its
    ``finished_at``): ``counters``, the time it waited and the time it ran."""
    if job.started_at is None:
        return engine.tally(*counters)
    finished = end or job.finished_at or timezone.now()
    return engine.tally(*counters, wait=waited(job), run=(finished - job.started_at).total_seconds())


def success_tally(job: Job) -> str:
    """The tally of a recorded success, for the acknowledgement that carries it (the
    worker defers it, to fuse it with its next pop)."""
    return tally_of(job, "succeeded")


def not_ours(job: Job, execution: Execution) -> str:
    """The row moved on without us (our lease expired and the job was reclaimed)."""
    logger.warning("Job %s attempt %s finished after it was reclaimed; result discarded.", job.pk, job.attempts,
                   extra=job_extra(job))
    if not Execution.objects.filter(job=job, attempt=execution.attempt).exists():
        execution.outcome = ExecutionOutcome.LOST
        write_execution(execution)
    return "lost"


def write_execution(execution: Execution) -> None:
    """Write an attempt's Execution row (fast statement, or its ORM twin)."""
    if fastsql.enabled():
        fastsql.insert_execution(execution)
    else:
        execution.save(force_insert=True)
