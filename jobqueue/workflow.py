"""Dependencies between jobs: a job waits until every job it depends on succeeded."""

from __future__ import annotations

import functools
import uuid
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidJob

if TYPE_CHECKING:
    from .managers import JobManager


def status_for_dependencies(manager: JobManager, dep_ids: list[uuid.UUID]) -> str | None:
    """The status a new job with these dependencies starts in.

    ``queued`` when all have succeeded already, ``waiting`` otherwise. A missing
    dependency, or one that failed or was cancelled, is refused.
    """
    from .models import JobStatus

    statuses = dict(manager.filter(pk__in=dep_ids).values_list("pk", "status"))
    missing = [str(d) for d in dep_ids if d not in statuses]
    if missing:
        raise InvalidJob(f"depends_on: no job with id {', '.join(missing)}.")
    dead = [str(pk) for pk, status in statuses.items() if status in (JobStatus.FAILED, JobStatus.CANCELLED)]
    if dead:
        raise InvalidJob(f"depends_on: job {', '.join(dead)} failed or was cancelled; nothing can wait for it.")
    if all(status == JobStatus.SUCCEEDED for status in statuses.values()):
        return JobStatus.QUEUED
    return JobStatus.WAITING


def release_dependents(job: Any) -> None:
    """After ``job`` finished: queue dependents whose dependencies all succeeded, or
    cancel them (with the reason) if ``job`` failed or was cancelled."""
    from django.db import transaction
    from django.db.models import Exists, OuterRef
    from django.utils import timezone

    from . import engine
    from .models import Job, JobStatus

    waiting = Job.objects.filter(depends_on=job, status=JobStatus.WAITING)
    if job.status != JobStatus.SUCCEEDED:
        for dependent in waiting:
            if dependent._guarded_update(
                (JobStatus.WAITING,),
                status=JobStatus.CANCELLED,
                finished_at=timezone.now(),
                error=f"dependency {job.pk} {job.status}",
            ):
                from .signals import send_finished

                send_finished(dependent)
        return
    unfinished = Job.depends_on.through.objects.filter(
        from_job=OuterRef("pk"), to_job__status__in=[s for s in JobStatus.values if s != JobStatus.SUCCEEDED]
    )
    ready = list(waiting.exclude(Exists(unfinished)))
    now = timezone.now()
    for dependent in ready:
        due = dependent.run_after is None or dependent.run_after <= now
        status = JobStatus.QUEUED if due else JobStatus.SCHEDULED
        if dependent._guarded_update((JobStatus.WAITING,), status=status, queued_at=now if due else None):
            transaction.on_commit(functools.partial(engine.safe_call, engine.push_job, dependent))
