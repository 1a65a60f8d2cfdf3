"""The transitions people ask for, one job at a time: cancel, requeue, run now, a new
priority, and waiting for a new dependency. ``Job.cancel()`` and the other model
methods, the admin's and the API's single-job actions call these."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import engine
from ..exceptions import DuplicateJob, InvalidTransition
from ..models import ACTIVE_STATUSES, Job, JobStatus
from ..validation import validate_priority
from . import effects, followups
from .guard import move, update


def cancel(job: Job, reason: str = "") -> bool:
    """``cancel`` a pending job now, or ask a running one to ``abort``.

    Returns ``True`` if the job is (or will be) cancelled; raises
    :class:`InvalidTransition` for a finished job.
    """
    if move(job, "cancel", finished_at=timezone.now(), error=reason or "cancelled"):
        effects.remove(job)
        # This object may predate its dependents; their cancellation must not wait for a sweep.
        job.refresh_from_db(fields=["has_dependents"])
        followups.finished(job)
        return True
    job.refresh_from_db(fields=["status"])
    if job.status == JobStatus.RUNNING:
        effects.after_commit(engine.request_abort, job.topic_id, str(job.pk))
        return True
    raise InvalidTransition(f"Job {job.pk} is {job.status}; only a pending or running job can be cancelled.")


def requeue_values(reset_attempts: bool = True) -> dict[str, Any]:
    """What ``requeue`` writes (besides the status), for one job or many."""
    values: dict[str, Any] = {
        "queued_at": timezone.now(), "finished_at": None, "error": "", "worker_id": "", "run_after": None,
    }
    if reset_attempts:
        values["attempts"] = 0
    return values


def requeue(job: Job, *, reset_attempts: bool = True) -> None:
    """``requeue`` a failed or cancelled job: back in its queue."""
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives a refusal
            won = move(job, "requeue", **requeue_values(reset_attempts))
    except IntegrityError:
        active = Job._default_manager.filter(
            topic_id=job.topic_id, entity_id=job.entity_id, status__in=ACTIVE_STATUSES
        )
        raise DuplicateJob(
            f"Entity {job.entity_id!r} already has an active job in topic {job.topic_id!r}; "
            f"job {job.pk} cannot be requeued.",
            existing_id=active.values_list("pk", flat=True).first(),
        ) from None
    if not won:
        job.refresh_from_db(fields=["status"])
        raise InvalidTransition(f"Job {job.pk} is {job.status}; only a failed or cancelled job can be requeued.")
    effects.push(job)


def run_now(job: Job) -> None:
    """``run_now``: queue a scheduled job now instead of at its ``run_after``."""
    if not move(job, "run_now", queued_at=timezone.now(), run_after=None):
        job.refresh_from_db(fields=["status"])
        raise InvalidTransition(f"Job {job.pk} is {job.status}; only a scheduled job can be run now.")
    effects.push(job)


def set_priority(job: Job, priority: int) -> None:
    """Change the priority of a pending job, in its row and in its Redis queue."""
    validate_priority(priority)
    if not update(job, "set_priority", priority=priority):
        job.refresh_from_db(fields=["status"])
        raise InvalidTransition(f"Job {job.pk} is {job.status}; only a pending job's priority can change.")
    effects.after_commit(engine.change_priority, job.topic_id, str(job.pk), priority, None, None, job.key)


def hold(job: Job) -> None:
    """``hold``: a queued or scheduled job waits again (it got an unfinished dependency).

    Raises :class:`InvalidTransition` if a worker took the job meanwhile.
    """
    if not move(job, "hold", queued_at=None):
        raise InvalidTransition(f"Job {job.pk} started before its new dependencies were recorded.")
    effects.remove(job)
