"""Tells the tasks framework when a task job starts and finishes.

A :class:`TaskBridge` is a hook of :mod:`jobqueue.transitions.hooks`: the claim and
final transitions call it directly, and it sends ``task_started`` and
``task_finished`` with the job's ``TaskResult``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import transaction

from .compat import InvalidTask, TaskResultDoesNotExist, TaskResultStatus, task_finished, task_started
from .exceptions import TaskFailed, TaskNotAllowed
from .topics import TaskTopics

if TYPE_CHECKING:
    from .backend import JobQueueBackend

logger = logging.getLogger("jobqueue.tasks")

#: The key of the bridge among the transitions' hooks.
HOOK_KEY = "jobqueue.tasks"


class TaskBridge:
    """The transitions hook of task jobs: the jobs of ``topics`` whose payload names a
    task and a backend that ``backend_for`` finds."""

    def __init__(self, topics: TaskTopics, backend_for: Callable[[Any], JobQueueBackend]) -> None:
        self.topics = topics
        self.backend_for = backend_for

    def backend_of(self, job: Any) -> JobQueueBackend | None:
        if job.topic_id not in self.topics or not isinstance(job.payload, dict) or "task" not in job.payload:
            return None
        try:
            return self.backend_for(job.payload.get("backend"))
        except TaskNotAllowed:
            return None

    def acts_on(self, job: Any) -> bool:
        return self.backend_of(job) is not None

    def started(self, job: Any) -> None:
        backend = self.backend_of(job)
        if backend is None:
            return
        try:
            # A claim returns the job's last Execution number: 0 saves the query for its rows.
            no_rows = getattr(job, "last_execution", None) == 0
            result = backend.result_from_job(job, executions=[] if no_rows else None)
        except InvalidTask:
            return  # the runner fails the job with the reason
        job._task_result = result  # the runner's TaskContext reuses it
        _send(task_started, backend, result)

    def finished(self, job: Any) -> None:
        backend = self.backend_of(job)
        if backend is None:
            return
        job_id = job.pk

        def send() -> None:
            try:
                result = backend.get_result(job_id)
            except (InvalidTask, TaskResultDoesNotExist):
                return
            if result.status != TaskResultStatus.FAILED or not result.errors:
                _send(task_finished, backend, result)
                return
            error = result.errors[-1]
            try:
                raise TaskFailed(error.traceback.rstrip() or error.exception_class_path)
            except TaskFailed:
                _send(task_finished, backend, result)

        # After the commit, so receivers read the finished row.
        transaction.on_commit(send, robust=True)


def _send(signal: Any, backend: JobQueueBackend, result: Any) -> None:
    # Robustly: a failing receiver must not stop the worker recording the job.
    for receiver, outcome in signal.send_robust(type(backend), task_result=result):
        if isinstance(outcome, Exception):
            logger.error("Receiver %r of a task signal failed for task %s: %r", receiver, result.id, outcome)
