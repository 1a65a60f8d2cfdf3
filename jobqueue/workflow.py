"""Dependencies between jobs: a job waits until every job it depends on succeeded.

``Job.objects.enqueue(..., depends_on=[a, b])`` makes one dependent job; a
:class:`Workflow` submits a whole graph in one transaction::

    wf = Workflow()
    fetch = wf.add("fetch", {"url": url})
    parse = wf.add("parse", depends_on=[fetch])
    wf.add("index", depends_on=[parse])
    wf.add("notify", depends_on=[parse], priority=5)
    jobs = wf.submit()

A job whose dependencies are not all finished is ``waiting``; it is queued when
all succeeded. One that failed or was cancelled cancels its dependents (and
theirs), each with an ``error`` naming the dependency (both done by the
transitions: :func:`jobqueue.transitions.followups.release_dependents`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.db import router, transaction

from .exceptions import DependencyCycle, InvalidJob, InvalidTransition
from .models import PENDING_STATUSES, Job, JobStatus
from .transitions import manual

# -- dependencies of existing jobs ---------------------------------------------------


def _upstream_contains(target: uuid.UUID, start: Iterable[uuid.UUID]) -> bool:
    """Whether ``target`` is among ``start`` or anything they (transitively) depend on."""
    through = Job.depends_on.through
    seen: set[uuid.UUID] = set()
    frontier = set(start)
    while frontier:
        if target in frontier:
            return True
        seen |= frontier
        frontier = set(through.objects.filter(from_job__in=frontier).values_list("to_job", flat=True)) - seen
    return False


def add_dependencies(job: Job, depends_on: Iterable[Job | uuid.UUID | str]) -> Job:
    """Make a pending job also wait for ``depends_on``.

    A queued or scheduled job goes back to ``waiting`` (and leaves its Redis queue)
    if any new dependency is unfinished. Raises :class:`DependencyCycle` if a new
    dependency already depends on ``job``, and :class:`InvalidTransition` if
    ``job`` is running or finished.
    """
    manager = Job.objects
    dep_ids = list(dict.fromkeys(manager._job_id(d, "depends_on") for d in depends_on))
    if not dep_ids:
        return job
    with transaction.atomic(using=router.db_for_write(Job)):
        if _upstream_contains(job.pk, dep_ids):
            raise DependencyCycle(f"Job {job.pk} cannot depend on {', '.join(map(str, dep_ids))}: "
                                  "that would make it wait for itself.")
        status = manager.status_for_dependencies(dep_ids)
        job.refresh_from_db(fields=["status"])
        if job.status not in PENDING_STATUSES:
            raise InvalidTransition(
                f"Job {job.pk} is {job.status}; only a pending job can get new dependencies."
            )
        known = set(job.depends_on.values_list("pk", flat=True))
        manager._add_dependencies(job, [d for d in dep_ids if d not in known])
        if status == JobStatus.WAITING and job.status != JobStatus.WAITING:
            # Guarded: if a worker took the job meanwhile, the new edges roll back.
            manual.hold(job)
    return job


# -- building a graph ----------------------------------------------------------------


@dataclass(eq=False)
class Step:
    """One job of a :class:`Workflow`, before it is submitted (``job`` is set after)."""

    topic: str
    payload: Any
    options: dict[str, Any]
    depends_on: list[Step | Any] = field(default_factory=list)
    job: Job | None = None

    def __repr__(self) -> str:
        return f"<Step {self.topic}{' ' + str(self.job.pk) if self.job is not None else ''}>"


class Workflow:
    """A graph of jobs submitted together: all of them are created, or none.

    ``add()`` returns a :class:`Step`; steps (and existing jobs or ids) can be
    given as ``depends_on`` to later ``add()`` calls or to :meth:`depend`.
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.submitted = False

    def add(self, topic: str, payload: Any = None, *, depends_on: Iterable[Step | Any] = (),
            **enqueue_kwargs: Any) -> Step:
        """Add a job; ``enqueue_kwargs`` are :meth:`JobManager.enqueue`'s (priority, entity_id, ...)."""
        if "parent" in enqueue_kwargs and isinstance(enqueue_kwargs["parent"], Step):
            raise InvalidJob("parent: give an existing job, not a step of the same workflow.")
        step = Step(topic=topic, payload=payload, options=dict(enqueue_kwargs))
        self.steps.append(step)
        self.depend(step, on=depends_on)
        return step

    def depend(self, step: Step, on: Iterable[Step | Any]) -> None:
        """Make ``step`` also wait for ``on`` (steps of this workflow, jobs or job ids).

        Raises :class:`DependencyCycle`, and adds nothing, if that closes a loop.
        """
        self._check_open()
        self._check_step(step)
        before = list(step.depends_on)
        for dep in on:
            if isinstance(dep, Step):
                self._check_step(dep)
            if dep not in step.depends_on:
                step.depends_on.append(dep)
        try:
            self.order()
        except DependencyCycle:
            step.depends_on = before
            raise

    def order(self) -> list[Step]:
        """The steps, each after the steps it depends on; :class:`DependencyCycle` if impossible."""
        placed: set[int] = set()
        visiting: list[Step] = []
        ordered: list[Step] = []

        def visit(step: Step) -> None:
            if id(step) in placed:
                return
            if step in visiting:
                loop = visiting[visiting.index(step):] + [step]
                path = " -> ".join(s.topic for s in loop)
                raise DependencyCycle(f"Workflow has a dependency cycle: {path}")
            visiting.append(step)
            for dep in step.depends_on:
                if isinstance(dep, Step):
                    visit(dep)
            visiting.pop()
            placed.add(id(step))
            ordered.append(step)

        for step in self.steps:
            visit(step)
        return ordered

    def submit(self) -> list[Job]:
        """Create every job in one transaction; returns them in the order they were added.

        Jobs whose dependencies are unfinished start ``waiting``; the others are
        queued (or scheduled) and reach Redis when the transaction commits.
        """
        self._check_open()
        ordered = self.order()
        with transaction.atomic(using=router.db_for_write(Job)):
            for step in ordered:
                deps = [dep.job if isinstance(dep, Step) else dep for dep in step.depends_on]
                step.job = Job.objects.enqueue(step.topic, step.payload, depends_on=deps, **step.options)
        self.submitted = True
        return [step.job for step in self.steps if step.job is not None]

    def _check_open(self) -> None:
        if self.submitted:
            raise InvalidTransition("This workflow was submitted already; build a new one.")

    def _check_step(self, step: Any) -> None:
        if not isinstance(step, Step) or not any(step is s for s in self.steps):
            raise InvalidJob(f"{step!r} is not a step of this workflow.")


# -- reading the graph ---------------------------------------------------------------


class Node(NamedTuple):
    id: uuid.UUID
    topic: str
    status: str


#: At most this many children or dependents are listed by :func:`graph` (a fan-out can be huge).
GRAPH_LIMIT = 100


def graph(job: Job, limit: int = GRAPH_LIMIT) -> dict[str, Any]:
    """A job's neighbours, for the admin: ``parent`` (the job that chained into this one),
    ``children`` (jobs it chained into), ``depends_on`` and ``dependents``, each a list
    of ``(id, topic, status)`` tuples, oldest first, at most ``limit`` each; ``counts``
    gives the full number of each."""
    def nodes(qs: Any) -> list[Node]:
        rows = qs.order_by("created_at", "id").values_list("id", "topic_id", "status")[:limit]
        return [Node(*row) for row in rows]

    parent = Job.objects.filter(pk=job.parent_id) if job.parent_id else Job.objects.none()
    relations = {
        "parent": parent,
        "children": Job.objects.filter(parent_id=job.pk),
        "depends_on": Job.objects.filter(dependents=job.pk),
        "dependents": Job.objects.filter(depends_on=job.pk),
    }
    result: dict[str, Any] = {name: nodes(qs) for name, qs in relations.items()}
    result["counts"] = {
        name: len(result[name]) if len(result[name]) < limit else qs.count() for name, qs in relations.items()
    }
    return result
