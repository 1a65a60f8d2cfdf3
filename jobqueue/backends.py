"""A ``django.tasks`` backend that stores tasks as jobs and runs them on jobqueue workers.

::

    TASKS = {
        "default": {
            "BACKEND": "jobqueue.backends.JobQueueBackend",
            "QUEUES": ["default", "emails"],          # each queue is a topic
            "OPTIONS": {"MAX_ATTEMPTS": 3, "TIMEOUT": 60, "TOPIC_PREFIX": "tasks."},
        }
    }

Each queue becomes the topic ``TOPIC_PREFIX + queue_name`` whose handler is
:func:`run_task_job`, so ``jobworker`` runs ``@task`` functions like any job and
the admin lists them as ordinary jobs. What ``django.tasks`` lacks is set per
backend (``OPTIONS``: ``MAX_ATTEMPTS``, ``TIMEOUT``, ``RETRY_BACKOFF``,
``ISOLATION``, ``CONCURRENCY``) or per task::

    @task(max_attempts=5, timeout=30)           # Django >= 6.1 and django-tasks
    def send_mail(to): ...

    send_mail.using(entity_id=f"mail-{user.pk}").enqueue(user.email)

An ``entity_id`` dedupes like ``Job.objects.enqueue(entity_id=...)``: enqueueing an
entity already pending returns that task's result; one already running raises
:class:`~jobqueue.exceptions.DuplicateJob`.

A ``TaskResult``'s ``worker_ids`` and ``errors`` list every run of the task, in order,
including runs before a requeue and a run that a stopping worker aborted (see
:func:`attempts_of`).

A worker runs only what is a ``Task`` object at the path a job records, and
imports that path's module only if it belongs to an installed app (or to a
module named in ``OPTIONS["TASK_MODULES"]``), or is already imported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import importlib
import logging
import re
import sys
import uuid
from collections.abc import Iterable
from inspect import iscoroutinefunction
from typing import Any

from django.apps import apps
from django.core import checks
from django.db import transaction

from . import registry
from .exceptions import DuplicateJob, InvalidJob, InvalidPayload
from .tasks_compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from .transitions.hooks import hooks
from .validation import MAX_INT, validate_entity_id, validate_positive_int, validate_topic_name

logger = logging.getLogger("jobqueue.tasks")

#: Attempts a task gets unless its backend or the task says otherwise (django.tasks runs a task once).
DEFAULT_TASK_MAX_ATTEMPTS = 1

STATUS_MAP = {
    "waiting": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

#: Backend OPTIONS that set the defaults of its queues' topics.
TOPIC_OPTIONS = {
    "MAX_ATTEMPTS": "max_attempts",
    "TIMEOUT": "timeout",
    "RETRY_BACKOFF": "retry_backoff",
    "ISOLATION": "isolation",
    "CONCURRENCY": "concurrency",
}
KNOWN_OPTIONS = {*TOPIC_OPTIONS, "TOPIC_PREFIX", "TASK_MODULES"}


class TaskNotAllowed(InvalidTask):  # noqa: N818 - reads as "the task is not allowed"
    """A job names something that is not a task this worker may run."""


class InvalidTaskArguments(InvalidPayload, TypeError):
    """A task's arguments cannot be stored as JSON: nothing was enqueued.

    Both an :class:`~jobqueue.exceptions.InvalidPayload` (a ``ValueError``) and, as
    Django's own backends raise, a ``TypeError``.
    """


class TaskCancelled(Exception):
    """Recorded as a task's error when its job was cancelled."""


class TaskLost(Exception):
    """Recorded as a task's error when the worker running it stopped responding."""


class TaskFailed(Exception):
    """The exception being handled while ``task_finished`` is sent for a failed task.

    The tasks framework logs a failure with the exception being handled, as its own
    backends send the signal from their ``except`` clause; a worker recorded the
    task's exception (maybe in another process), so this one carries its text: the
    last error's traceback.
    """


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JobQueueTask(Task):
    """A ``Task`` with jobqueue's extras: retries, a timeout and an entity id."""

    max_attempts: int | None = None  # None: the queue's default
    timeout: int | None = None  # seconds; None: the queue's default
    entity_id: str | None = None  # dedupe key among the queue's active jobs

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: Any = None,
        backend: str | None = None,
        max_attempts: int | None = None,
        timeout: int | None = None,
        entity_id: str | None = None,
    ) -> JobQueueTask:
        """``Task.using()`` plus ``max_attempts``, ``timeout`` and ``entity_id``."""
        task: Any = Task.using(
            self, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend
        )
        extras = {"max_attempts": max_attempts, "timeout": timeout, "entity_id": entity_id}
        changes = {name: value for name, value in extras.items() if value is not None}
        return dataclasses.replace(task, **changes) if changes else task


# Topics whose handler is the task runner, and prefixes of topics created on demand
# (a backend with no QUEUES accepts any queue under its TOPIC_PREFIX).
_task_topics: set[str] = set()
_dynamic_prefixes: dict[str, dict[str, Any]] = {}


def _resolve_prefixed_topic(topic: str) -> registry.HandlerSpec | None:
    for prefix, defaults in _dynamic_prefixes.items():
        if topic.startswith(prefix) and len(topic) > len(prefix):
            defaults = {**defaults, "description": f"django.tasks queue {topic[len(prefix):]!r}"}
            return registry.HandlerSpec(topic=topic, func=run_task_job, defaults=defaults)
    return None


def is_task_topic(topic: str) -> bool:
    return topic in _task_topics or any(topic.startswith(p) and topic != p for p in _dynamic_prefixes)


class JobQueueBackend(BaseTaskBackend):
    """Tasks become jobs of the topic ``TOPIC_PREFIX + queue_name``."""

    task_class = JobQueueTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]):
        super().__init__(alias, params)
        self.topic_prefix: str = self.options.get("TOPIC_PREFIX", "") or ""
        self.task_modules: tuple[str, ...] = tuple(self.options.get("TASK_MODULES", ()) or ())
        self.topic_defaults: dict[str, Any] = {"max_attempts": DEFAULT_TASK_MAX_ATTEMPTS}
        for option, field in TOPIC_OPTIONS.items():
            if self.options.get(option) is not None:
                self.topic_defaults[field] = self.options[option]
        self.problems: list[checks.CheckMessage] = []
        self._register_topics()
        connect_signals()

    # -- topics ------------------------------------------------------------------------

    def topic_for(self, queue_name: str) -> str:
        return f"{self.topic_prefix}{queue_name}"

    def queue_for(self, topic: str) -> str:
        return topic[len(self.topic_prefix):] if topic.startswith(self.topic_prefix) else topic

    def _register_topics(self) -> None:
        unknown = sorted(set(self.options) - KNOWN_OPTIONS)
        if unknown:
            self.problems.append(checks.Error(
                f"TASKS[{self.alias!r}]['OPTIONS'] has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(KNOWN_OPTIONS))}.", id="jobqueue.E201"))
        if not self.queues:
            if not self.topic_prefix:
                self.problems.append(checks.Error(
                    f"TASKS[{self.alias!r}] allows every queue (QUEUES is empty) but has no TOPIC_PREFIX.",
                    hint="List the QUEUES, or set OPTIONS['TOPIC_PREFIX'] (e.g. 'tasks.') so queue topics "
                    "cannot take over other topics.", id="jobqueue.E202"))
                return
            defaults = self._defaults_for(f"{self.topic_prefix}default")
            if defaults is not None:
                _dynamic_prefixes[self.topic_prefix] = defaults
                registry.add_resolver(_resolve_prefixed_topic)
            return
        for queue in sorted(self.queues):
            topic = self.topic_for(queue)
            defaults = self._defaults_for(topic)
            if defaults is None:
                continue
            existing = registry.get(topic)
            if existing is not None and existing.func is not run_task_job:
                self.problems.append(checks.Error(
                    f"Task queue {queue!r} of TASKS[{self.alias!r}] is topic {topic!r}, which already has "
                    f"the handler {existing.name}.",
                    hint="Rename the queue or set OPTIONS['TOPIC_PREFIX'].", id="jobqueue.E203"))
                continue
            registry.register(topic, run_task_job, **defaults)
            _task_topics.add(topic)

    def _defaults_for(self, topic: str) -> dict[str, Any] | None:
        try:
            validate_topic_name(topic)
            registry.handler(topic, **self.topic_defaults)  # validates the options, registers nothing
        except (InvalidJob, TypeError, ValueError) as exc:
            self.problems.append(checks.Error(
                f"TASKS[{self.alias!r}]: {exc}", hint="Queue names become topic names: lowercase letters, "
                "digits, '_', '.' and '-'.", id="jobqueue.E204"))
            return None
        return {**self.topic_defaults, "description": f"django.tasks queue {self.queue_for(topic)!r}"}

    def check(self, **kwargs: Any) -> list[Any]:
        problems = list(self.problems)
        if not apps.is_installed("jobqueue"):
            problems.append(checks.Error(
                f"TASKS[{self.alias!r}] uses {type(self).__name__}, but 'jobqueue' is not in INSTALLED_APPS.",
                hint="Add 'jobqueue' to INSTALLED_APPS: its models store the tasks and its workers run them.",
                id="jobqueue.E205"))
        return problems

    # -- enqueue -----------------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        topic = self.topic_for(task.queue_name)
        try:
            validate_topic_name(topic)
            validate_positive_int(getattr(task, "max_attempts", None), "max_attempts")
            validate_positive_int(getattr(task, "timeout", None), "timeout")
            validate_entity_id(getattr(task, "entity_id", None))
        except InvalidJob as exc:
            raise InvalidTask(str(exc)) from exc
        for name in ("max_attempts", "timeout"):
            if (getattr(task, name, None) or 0) > MAX_INT:
                raise InvalidTask(f"{name} must be at most {MAX_INT} (a database integer).")
        spec = registry.get(topic)
        if spec is not None and spec.func is not run_task_job:
            raise InvalidTask(f"Queue {task.queue_name!r} is topic {topic!r}, whose handler is {spec.name}.")

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        from .models import Job

        self.validate_task(task)
        try:
            payload = {
                "task": task.module_path,
                "args": normalize_json(list(args)),
                "kwargs": normalize_json(dict(kwargs)),
                "backend": self.alias,
            }
        except (TypeError, ValueError) as exc:
            raise InvalidTaskArguments(f"Task arguments must be JSON-serializable: {exc}") from exc
        except RecursionError:
            raise InvalidTaskArguments("Task arguments are nested too deeply to be JSON.") from None
        try:
            # In UTC: PostgreSQL refuses offsets past 15:59.
            run_after = task.run_after.astimezone(dt.timezone.utc) if task.run_after is not None else None
        except OverflowError as exc:
            raise InvalidTask(f"run_after {task.run_after} is out of range.") from exc
        try:
            job = Job.objects.enqueue(
                self.topic_for(task.queue_name),
                payload,
                priority=task.priority,
                run_after=run_after,
                entity_id=getattr(task, "entity_id", None),
                max_attempts=getattr(task, "max_attempts", None),
                timeout=getattr(task, "timeout", None),
            )
        except InvalidPayload as exc:  # NaN, a NUL character...: only the arguments can be at fault
            raise InvalidTaskArguments(f"Task arguments cannot be stored: {exc}") from exc
        same = job.payload is payload
        result = self.result_from_job(job, task if same else None, executions=[] if same else None)
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results -----------------------------------------------------------------------

    def owns(self, job: Any) -> bool:
        payload = job.payload
        return isinstance(payload, dict) and payload.get("backend") == self.alias and "task" in payload

    def get_result(self, result_id: Any) -> Any:
        from .models import Job

        try:
            pk = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(f"No task result {result_id!r}.") from None
        job = Job.objects.filter(pk=pk).first()
        if job is None or not self.owns(job):
            raise TaskResultDoesNotExist(f"No task result {result_id!r} in backend {self.alias!r}.")
        return self.result_from_job(job)

    def result_from_job(self, job: Any, task: Any = None, executions: list[Any] | None = None) -> Any:
        """The ``TaskResult`` a job stands for; ``executions`` saves a query when known."""
        from .models import Execution

        if task is None:
            task = load_task(job.payload.get("task"), self.task_modules)
        changes: dict[str, Any] = {}
        if task.priority != job.priority:
            changes["priority"] = job.priority
        if task.queue_name != self.queue_for(job.topic_id):
            changes["queue_name"] = self.queue_for(job.topic_id)
        if task.backend != self.alias:
            changes["backend"] = self.alias
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
            backend=self.alias,
            errors=errors,
            worker_ids=worker_ids,
        )
        if status == TaskResultStatus.SUCCESSFUL and isinstance(job.result, dict):
            object.__setattr__(result, "_return_value", job.result.get("return_value"))
        return result


# -- attempts and errors -----------------------------------------------------------------


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
        TaskError(exception_class_path=exception_class_path(e), traceback=e.traceback or e.error)
        for e in executions
        if e.outcome not in ("succeeded", "running")
    ]
    last = executions[-1].outcome if executions else None
    if job.status == "cancelled" and last != "cancelled":
        errors.append(TaskError(exception_class_path=_dotted(TaskCancelled), traceback=job.error))
    elif job.status == "failed" and last in (None, "succeeded", "running"):
        errors.append(TaskError(exception_class_path=_dotted(TaskLost), traceback=job.error))
    return worker_ids, errors


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|\Z)")


def exception_class_path(execution: Any) -> str:
    """The dotted path of the exception an attempt raised, read from its traceback.

    ``traceback.format_exception`` ends with ``module.Class: message`` (``Class``
    alone for builtins); notes may follow, so the line whose class the recorded
    error names wins.
    """
    name = (execution.error or "").split(":", 1)[0].strip()
    lines = [line for line in (execution.traceback or "").splitlines() if line and not line[0].isspace()]
    matches = [m.group(1) for m in map(_EXCEPTION_LINE.match, reversed(lines)) if m]
    for dotted in [d for d in matches if d.rsplit(".", 1)[-1] == name] or matches:
        return dotted if "." in dotted else f"builtins.{dotted}"
    if execution.outcome == "timeout":
        return "jobqueue.worker.runner.JobTimeout"
    if execution.outcome == "aborted":
        return "jobqueue.worker.runner.WorkerInterrupted"
    by_outcome = {"lost": TaskLost, "cancelled": TaskCancelled}
    return _dotted(by_outcome.get(execution.outcome, Exception))


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- running -----------------------------------------------------------------------------

_TASK_PATH = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\Z")


def load_task(path: Any, extra_modules: Iterable[str] = ()) -> Any:
    """The ``Task`` object at ``path``, refusing anything else.

    The module is imported only if it is already imported, belongs to an
    installed app, or is under one of ``extra_modules``; the attribute must be a
    ``Task`` (so ``os.system`` and the like are never called).
    """
    if not isinstance(path, str) or not _TASK_PATH.match(path):
        raise TaskNotAllowed(f"{path!r} is not the dotted path of a task.")
    module_name, _, name = path.rpartition(".")
    if module_name not in sys.modules:
        allowed = apps.get_containing_app_config(module_name) is not None or any(
            module_name == m or module_name.startswith(f"{m}.") for m in extra_modules
        )
        if not allowed:
            raise TaskNotAllowed(
                f"Refusing to import {module_name!r} for task {path!r}: it is not part of an installed app "
                "(list it in the backend's OPTIONS['TASK_MODULES'] to allow it)."
            )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskNotAllowed(f"Cannot import the module of task {path!r}: {exc}") from exc
    obj = getattr(module, name, None)
    if not isinstance(obj, Task):
        raise TaskNotAllowed(f"{path!r} is a {type(obj).__name__}, not a task; only @task functions run.")
    return obj


def backend_for(alias: Any) -> JobQueueBackend:
    try:
        backend = task_backends[alias] if isinstance(alias, str) else None
    except Exception as exc:  # the tasks framework's own "unknown alias" error
        raise TaskNotAllowed(f"Task backend {alias!r} is not configured: {exc}") from exc
    if not isinstance(backend, JobQueueBackend):
        raise TaskNotAllowed(f"Task backend {alias!r} is not a jobqueue backend.")
    return backend


def run_task_job(job: Any) -> Any:
    """The handler of every task queue: call the recorded task with its arguments."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    try:
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise TaskNotAllowed("A task job's payload needs a list of args and a dict of kwargs.")
        backend = backend_for(payload.get("backend"))
        task = load_task(payload.get("task"), backend.task_modules)
    except TaskNotAllowed:
        # Another attempt would be refused the same way.
        type(job)._default_manager.filter(pk=job.pk).update(max_attempts=job.attempts)
        job.max_attempts = job.attempts
        raise
    if task.takes_context:
        result = getattr(job, "_task_result", None) or backend.result_from_job(job, task)
        args = [TaskContext(task_result=result), *args]
    if iscoroutinefunction(task.func):
        # Run in this thread so the worker's timeout (SIGALRM) interrupts the coroutine itself.
        value = asyncio.run(task.func(*args, **kwargs))
    else:
        value = task.call(*args, **kwargs)
    try:
        # Wrapped, so a return value is never read as a chaining instruction.
        return {"return_value": normalize_json(value)}
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Task {task.module_path} returned a value that is not JSON: {exc}") from exc


# -- signals -----------------------------------------------------------------------------


def _task_backend_of(job: Any) -> JobQueueBackend | None:
    if not is_task_topic(job.topic_id) or not isinstance(job.payload, dict) or "task" not in job.payload:
        return None
    try:
        return backend_for(job.payload.get("backend"))
    except TaskNotAllowed:
        return None


def _on_job_started(sender: Any, job: Any, **kwargs: Any) -> None:
    backend = _task_backend_of(job)
    if backend is None:
        return
    try:
        # A claim returns the job's last Execution number: 0 saves the query for its rows.
        result = backend.result_from_job(job, executions=[] if getattr(job, "last_execution", None) == 0 else None)
    except InvalidTask:
        return  # the runner fails the job with the reason
    job._task_result = result
    _send(task_started, backend, result)


def _on_job_finished(sender: Any, job: Any, **kwargs: Any) -> None:
    backend = _task_backend_of(job)
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


class _TaskBridge:
    """Tells the tasks framework when a task job starts and finishes (a transitions hook)."""

    def acts_on(self, job: Any) -> bool:
        return _task_backend_of(job) is not None

    def started(self, job: Any) -> None:
        _on_job_started(None, job)

    def finished(self, job: Any) -> None:
        _on_job_finished(None, job)


def connect_signals() -> None:
    hooks.add("jobqueue.tasks", _TaskBridge())


__all__ = [
    "DuplicateJob",
    "InvalidTaskArguments",
    "JobQueueBackend",
    "JobQueueTask",
    "TaskCancelled",
    "TaskFailed",
    "TaskLost",
    "TaskNotAllowed",
    "exception_class_path",
    "load_task",
    "run_task_job",
]
