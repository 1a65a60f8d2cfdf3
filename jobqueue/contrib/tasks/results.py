"""A job as a ``TaskResult``: its status, its attempts and the errors they ended with."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ...storable import exception_class_path
from .compat import TaskError, TaskResult, TaskResultStatus
from .exceptions import TaskCancelled, TaskLost
from .loading import load_task

if TYPE_CHECKING:
    from .backend import JobQueueBackend

STATUS_MAP = {
    "waiting": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

#: The class an attempt stands for when its Execution row names none, by how it ended.
#: The worker's classes are named, not imported: importing the worker needs the models.
OUTCOME_ERROR_CLASSES = {
    "timeout": "jobqueue.worker.runner.JobTimeout",
    "aborted": "jobqueue.worker.runner.WorkerInterrupted",
    "lost": exception_class_path(TaskLost),
    "cancelled": exception_class_path(TaskCancelled),
}
#: The class of an error whose exception is unknown (a child process that died without
#: a word, or an attempt recorded before Execution.error_class existed).
UNKNOWN_ERROR_CLASS = exception_class_path(Exception)


def result_from_job(backend: JobQueueBackend, job: Any, task: Any = None, executions: list[Any] | None = None) -> Any:
    """The ``TaskResult`` that ``job`` stands for in ``backend``; ``executions`` (its
    Execution rows in attempt order) saves a query when known."""
    from ...models import Execution

    if task is None:
        task = load_task(job.payload.get("task"), backend.task_modules)
    changes: dict[str, Any] = {}
    if task.priority != job.priority:
        changes["priority"] = job.priority
    if task.queue_name != backend.queue_for(job.topic_id):
        changes["queue_name"] = backend.queue_for(job.topic_id)
    if task.backend != backend.alias:
        changes["backend"] = backend.alias
    if job.run_after is not None and task.run_after != job.run_after:
        changes["run_after"] = job.run_after
    if changes:
        task = dataclasses.replace(task, **changes)
    if executions is None:
        executions = list(Execution.objects.filter(job_id=job.pk).order_by("attempt"))
    worker_ids, errors = attempts_of(job, executions)
    status = STATUS_MAP[job.status]
    first = executions[0].started_at if executions else None
    result: Any = TaskResult(
        task=task,
        id=str(job.pk),
        status=status,
        enqueued_at=job.created_at,
        started_at=first or job.started_at,
        finished_at=job.finished_at,
        last_attempted_at=job.started_at,
        args=job.payload.get("args", []),
        kwargs=job.payload.get("kwargs", {}),
        backend=backend.alias,
        errors=errors,
        worker_ids=worker_ids,
    )
    if status == TaskResultStatus.SUCCESSFUL and isinstance(job.result, dict):
        object.__setattr__(result, "_return_value", job.result.get("return_value"))
    return result


def attempts_of(job: Any, executions: list[Any]) -> tuple[list[str], list[Any]]:
    """A task's ``worker_ids`` and ``errors``, from its job's Execution rows in attempt order.

    An attempt is a run of the task: each Execution row, whatever ended it (a success,
    an error, a timeout, a lost worker, a cancel, or a stopping worker that aborted it),
    then the run in progress, whose row is written when it ends. Runs before a requeue
    and aborted runs are attempts too, although the job's own ``attempts`` (what
    ``max_attempts`` limits) leaves them out; a job put back before it started left
    no row and made no attempt. So ``TaskResult.attempts`` (``len(worker_ids)``) and
    ``TaskContext.attempt`` count every run. ``errors`` has one entry per finished
    attempt that did not succeed, in the same order, and a last one for a job
    cancelled or failed by something other than its last attempt.
    """
    worker_ids = [e.worker_id for e in executions]
    if job.status == "running":
        worker_ids.append(job.worker_id)
    errors = [
        TaskError(exception_class_path=error_class_of(e), traceback=e.traceback or e.error)
        for e in executions
        if e.outcome not in ("succeeded", "running")
    ]
    last = executions[-1].outcome if executions else None
    if job.status == "cancelled" and last != "cancelled":
        errors.append(TaskError(exception_class_path=OUTCOME_ERROR_CLASSES["cancelled"], traceback=job.error))
    elif job.status == "failed" and last in (None, "succeeded", "running"):
        errors.append(TaskError(exception_class_path=OUTCOME_ERROR_CLASSES["lost"], traceback=job.error))
    return worker_ids, errors


def error_class_of(execution: Any) -> str:
    """The dotted path of the exception an attempt ended with.

    That is the class its worker recorded (``Execution.error_class``); for a row that
    names none, the class its outcome implies (a timeout, a lost worker...), else
    :data:`UNKNOWN_ERROR_CLASS`.
    """
    return execution.error_class or OUTCOME_ERROR_CLASSES.get(execution.outcome, UNKNOWN_ERROR_CLASS)
