"""What follows a transition: the package's own follow-ups, called directly, then the
user-facing signals.

- a success chains into the next topic (a ``Next`` result or the topic's
  ``next_topic``), inside the transaction that records it: never a success
  without its successor, and a retried acknowledgement never creates two;
- a finished job releases (or cancels) the jobs that depend on it
  (:func:`release_dependents`);
- the hooks of :mod:`.hooks` (the ``django.tasks`` bridge) hear of starts and ends;
- signals (:mod:`jobqueue.signals`) are for users, and sent only when someone listens.

:func:`quiet` tells the worker's fast path when a success needs none of this.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef
from django.utils import timezone

from ..chaining import Next, next_jobs
from ..exceptions import ProtectedTopic
from ..models import Job, JobStatus
from ..permissions import is_protected
from ..signals import job_failed, job_finished, job_started, job_succeeded
from . import effects
from .guard import move
from .hooks import hooks


def started(job: Job) -> None:
    """A claimed job is about to run."""
    job_started.send(sender=Job, job=job)
    hooks.started(job)


def succeeded(job: Job, result: Any) -> None:
    """``job`` succeeded with the handler's return value ``result`` (inside the transaction)."""
    chain(job, result)
    job_succeeded.send(sender=Job, job=job, result=result)
    finished(job)


def failed(job: Job, error: str, will_retry: bool) -> None:
    """An attempt of ``job`` failed; it is ``scheduled`` again or ``failed`` for good."""
    job_failed.send(sender=Job, job=job, error=error, will_retry=will_retry)
    if not will_retry:
        finished(job)


def finished(job: Job) -> None:
    """``job`` reached a final state (inside the transaction that recorded it)."""
    job_finished.send(sender=Job, job=job)
    hooks.finished(job)
    # A dependent added after this row was read is released by the worker's sweep.
    if getattr(job, "has_dependents", True):
        release_dependents(job)


def release_dependents(job: Job) -> None:
    """After ``job`` finished: ``release`` the dependents whose dependencies all
    succeeded, or ``cancel`` them (with the reason) if ``job`` failed or was cancelled.

    A cancelled dependent is finished in turn, which cancels its own dependents: a
    failure travels down the whole graph.
    """
    waiting = Job.objects.filter(depends_on=job, status=JobStatus.WAITING)
    if job.status != JobStatus.SUCCEEDED:
        reason = f"Cancelled: dependency {job.pk} ({job.topic_id}) {job.status}"
        for dependent in waiting:
            if move(dependent, "cancel", only=(JobStatus.WAITING,), finished_at=timezone.now(), error=reason):
                finished(dependent)
        return
    unfinished = Job.depends_on.through.objects.filter(
        from_job=OuterRef("pk"), to_job__status__in=[s for s in JobStatus.values if s != JobStatus.SUCCEEDED]
    )
    now = timezone.now()
    for dependent in waiting.exclude(Exists(unfinished)):
        due = dependent.run_after is None or dependent.run_after <= now
        if move(dependent, "release", JobStatus.QUEUED if due else JobStatus.SCHEDULED,
                queued_at=now if due else None):
            effects.push(dependent)


def quiet(job: Job, result: Any) -> bool:
    """True when nothing follows this success: no successor, no dependents, no hook and
    no listener. The worker may then record it in one statement, without follow-ups."""
    return not (
        next_jobs(result)
        or job.topic.next_topic
        or job.has_dependents
        or hooks.acts_on(job)
        or job_succeeded.has_listeners(Job)
        or job_finished.has_listeners(Job)
    )


def chain(job: Job, result: Any) -> list[Job]:
    """Create the jobs a success chains into; returns them."""
    items = next_jobs(result)
    if not items and job.topic.next_topic:
        data = result if result is not None else job.payload
        items = [Next(job.topic.next_topic, data)]
    created = []
    for item in items:
        if item.from_data and is_protected(item.topic):
            raise ProtectedTopic(
                f"The result asks to chain into {item.topic!r}, which is or leads into a topic whose jobs need "
                f"a permission: a chain read from a result never does (return Next(...) from code, or set the "
                f"topic's next_topic)."
            )
        created.append(Job.objects.enqueue(item.topic, item.data, parent=job, **item.options))
    return created
