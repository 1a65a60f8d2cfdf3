"""``enqueue``: a new job's row, then its Redis push once the row commits (or, for a
plain job in autocommit on PostgreSQL, while it commits: see :func:`insert_plain`).

``Job.objects.enqueue()`` validates, dedupes and builds the job (it is the public
face of this transition); this module writes it and tells Redis and the listeners.
A job whose id the caller fixed (``job_id=``, e.g. a broker message's id) is written
once: :func:`already_there` and :func:`insert_new` find the row that holds the id.
The push also counts the job as enqueued in its topic's metrics; a job created waiting
for dependencies, which no queue holds yet, is only counted.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from django.db import IntegrityError, connections, router, transaction

from .. import engine
from ..conf import settings
from ..engine import sending
from ..engine.connection import waiting
from ..exceptions import DuplicateJob
from ..logging import job_extra
from ..models import Job, JobStatus
from ..signals import job_enqueued
from . import fastsql

logger = logging.getLogger("jobqueue")

#: The metrics tally of one new job.
ENQUEUED = engine.tally("enqueued")


def insert(job: Job, using: str, *, fast: bool = True, connection: Any = None) -> None:
    """Write a new job's row: the fast ``insert_job`` statement, or ``save()`` (needed
    where a unique constraint may refuse the row inside a savepoint). ``connection``:
    ``connections[using]``, if the caller has it."""
    if fast and fastsql.enabled(using, connection):
        fastsql.insert_job(job, using, connection)
    else:
        job.save(force_insert=True, using=using)


def insert_plain(job: Job, using: str) -> None:
    """``enqueue()`` of a job with no entity, dependencies or id of the caller's: no
    constraint can refuse its row, so it is one ``INSERT`` (in autocommit it commits, and
    the job is pushed, at once; inside a transaction the push waits for its commit).
    :func:`insert` and :func:`created`, the database's connection looked up once.

    A queued job in autocommit on PostgreSQL is pushed as soon as its ``INSERT`` is sent,
    not after its answer: the worker's wake-up and its claim travel while the row is
    written and flushed, and the claim waits for the row's commit (see
    :func:`.fastsql.insert_job`). If the ``INSERT`` fails the push is taken back; a
    worker that took the job first finds no row and drops it (``recovery.give_back``).
    Nothing that could log or touch the database runs while the statement does (the
    database connection is locked meanwhile): the thread's last push's answer is read
    before it (where it was not read at the end of the last enqueue), and a failed push
    is reported after it. This push's answer is read while the ``INSERT`` commits if it
    comes then (what it says acted on after), else as the call ends if it has come."""
    connection = connections[using]
    cursor = fastsql.pushing_cursor(connection) if job.status == JobStatus.QUEUED else None
    if cursor is None:
        insert(job, using, connection=connection)
        created([job], using, connection)
        return
    if waiting.read is not None:  # this thread's last push's answer, unread
        engine.safe_call(sending.settle)  # read now (see engine/sending.py)
    failed: list[Exception] = []

    def push() -> None:
        try:
            _push([job])
        except Exception as exc:  # reported once the statement is done
            failed.append(exc)

    try:
        fastsql.insert_job(job, using, connection, pushed=push, meanwhile=sending.answer_reader, cursor=cursor)
    except BaseException:
        engine.safe_call(engine.remove, job.topic_id, str(job.pk), job.entity_id, key=job.key)
        raise
    if failed:
        if not isinstance(failed[0], redis.RedisError):
            raise failed[0]
        _unpushed([job], failed[0])
    else:
        engine.safe_call(sending.settle_if_answered)  # not before the next INSERT
    announce([job])


def already_there(job: Job) -> Job | None:
    """The row that already holds ``job``'s id (fixed by the caller), or ``None``.

    A row of another topic is refused with :class:`DuplicateJob`: an id names one job.
    """
    _lock_before_reading(router.db_for_write(Job))
    existing = Job.objects.filter(pk=job.pk).first()
    if existing is not None and existing.topic_id != job.topic_id:
        raise DuplicateJob(
            f"Job id {job.pk} already belongs to a job of topic {existing.topic_id!r}, not {job.topic_id!r}.",
            existing_id=existing.pk,
        )
    return existing


def insert_new(jobs: list[Job], using: str) -> list[Job | None]:
    """Insert those of ``jobs`` (ids fixed by the caller) whose id no row holds yet.

    Runs in the caller's transaction; one query finds the ids already there, one bulk
    insert writes the rest. Returns, for each job, ``None`` once inserted, else the row
    that held its id (of any topic: the caller decides what a clash means); a job whose
    id comes twice in ``jobs`` is inserted once. If another transaction commits one of
    the ids meanwhile, the jobs are inserted one at a time instead.
    """
    _lock_before_reading(using)
    found = {row.pk: row for row in Job.objects.using(using).filter(pk__in=[job.pk for job in jobs])}
    fresh: dict[uuid.UUID, Job] = {}
    for job in jobs:
        if job.pk not in found and job.pk not in fresh:
            fresh[job.pk] = job
    try:
        with transaction.atomic(using=using):
            Job.objects.db_manager(using)._insert_many(list(fresh.values()), using)
    except IntegrityError:
        for pk, job in list(fresh.items()):
            try:
                with transaction.atomic(using=using):
                    insert(job, using, fast=False)
            except IntegrityError:
                del fresh[pk]
                found[pk] = Job.objects.using(using).get(pk=pk)
    return [None if fresh.get(job.pk) is job else found.get(job.pk, fresh.get(job.pk)) for job in jobs]


def _lock_before_reading(using: str) -> None:
    """On SQLite inside a transaction, take the write lock before looking for an id: two
    transactions that both read first cannot both upgrade to writing (one would fail at
    once with "database is locked" instead of waiting). Elsewhere the unique key decides."""
    conn = transaction.get_connection(using)
    if conn.vendor == "sqlite" and conn.in_atomic_block:
        with conn.cursor() as cursor:
            cursor.execute(f"UPDATE {conn.ops.quote_name(Job._meta.db_table)} SET id = id WHERE 0")


def created(jobs: list[Job], using: str, connection: Any = None) -> None:
    """The rows of ``jobs`` were written: announce them, and push the queued and
    scheduled ones when the transaction commits (counting them all as enqueued).
    ``connection``: ``connections[using]``, if the caller has it."""
    announce(jobs)
    if jobs:
        (connection or transaction.get_connection(using)).on_commit(lambda: push_committed(jobs))


def announce(jobs: list[Job]) -> None:
    """Send ``job_enqueued`` for each of the new ``jobs``."""
    if job_enqueued.has_listeners(Job):
        for job in jobs:
            job_enqueued.send(sender=Job, job=job)


def push_committed(jobs: list[Job]) -> None:
    """Push jobs whose rows just committed (or, from :func:`insert_plain`, are being
    committed). If Redis cannot be reached, the jobs are safe in the database and a
    worker pushes them within about ``RECONCILE_SECONDS`` (no retry here: a blip outlasts
    an immediate one, and the caller's request should not wait)."""
    try:
        _push(jobs)
    except redis.RedisError as exc:
        _unpushed(jobs, exc)


def _push(jobs: list[Job]) -> None:
    if len(jobs) == 1 and jobs[0].status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        engine.send_job(jobs[0], ENQUEUED)
    else:
        engine.push_jobs(jobs, enqueued=True)


def _unpushed(jobs: list[Job], exc: redis.RedisError) -> None:
    """Log that Redis could not be told of ``jobs`` (see :func:`push_committed`)."""
    shown = ", ".join(str(job.pk) for job in jobs[:3]) + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
    logger.warning("Redis unavailable for the push of job(s) %s (%s): committed, they are kept in the database, "
                   "and a worker pushes them within about %s s (a scheduled job once it is due).",
                   shown, exc, settings.RECONCILE_SECONDS, extra=job_extra(jobs[0]) if len(jobs) == 1 else None)
