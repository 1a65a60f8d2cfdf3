"""A ``django.tasks`` backend that stores tasks as jobs and runs them on jobqueue workers.

::

    TASKS = {
        "default": {
            "BACKEND": "jobqueue.contrib.tasks.JobQueueBackend",
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
:func:`~jobqueue.contrib.tasks.results.attempts_of`); each error names the class of the
exception the worker recorded for that run.

A worker runs only what is a ``Task`` object at the path a job records, and
imports that path's module only if it belongs to an installed app (or to a
module named in ``OPTIONS["TASK_MODULES"]``), or is already imported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from inspect import iscoroutinefunction
from typing import Any

from django.apps import apps
from django.core import checks

from ... import registry
from ...exceptions import InvalidJob, InvalidPayload
from ...transitions.hooks import hooks
from ...validation import MAX_INT, validate_entity_id, validate_positive_int, validate_topic_name
from .bridge import HOOK_KEY, TaskBridge
from .compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskContext,
    TaskResultDoesNotExist,
    normalize_json,
    task_backends,
    task_enqueued,
)
from .exceptions import InvalidTaskArguments, TaskNotAllowed
from .loading import load_task
from .results import result_from_job
from .topics import TaskTopics

#: Attempts a task gets unless its backend or the task says otherwise (django.tasks runs a task once).
DEFAULT_TASK_MAX_ATTEMPTS = 1

#: Backend OPTIONS that set the defaults of its queues' topics.
TOPIC_OPTIONS = {
    "MAX_ATTEMPTS": "max_attempts",
    "TIMEOUT": "timeout",
    "RETRY_BACKOFF": "retry_backoff",
    "ISOLATION": "isolation",
    "CONCURRENCY": "concurrency",
}
KNOWN_OPTIONS = {*TOPIC_OPTIONS, "TOPIC_PREFIX", "TASK_MODULES"}


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
        hooks.add(HOOK_KEY, TaskBridge(task_topics, backend_for))

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
                task_topics.add_prefix(self.topic_prefix, **defaults)
            return
        for queue in sorted(self.queues):
            topic = self.topic_for(queue)
            defaults = self._defaults_for(topic)
            if defaults is None:
                continue
            existing = registry.get(topic)
            if existing is not None and not task_topics.runs(existing):
                self.problems.append(checks.Error(
                    f"Task queue {queue!r} of TASKS[{self.alias!r}] is topic {topic!r}, which already has "
                    f"the handler {existing.name}.",
                    hint="Rename the queue or set OPTIONS['TOPIC_PREFIX'].", id="jobqueue.E203"))
                continue
            task_topics.add(topic, **defaults)

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
        if spec is not None and not task_topics.runs(spec):
            raise InvalidTask(f"Queue {task.queue_name!r} is topic {topic!r}, whose handler is {spec.name}.")

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        from ...models import Job

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
        from ...models import Job

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
        return result_from_job(self, job, task, executions)


# -- running -----------------------------------------------------------------------------


def backend_for(alias: Any) -> JobQueueBackend:
    """The jobqueue backend configured as ``TASKS[alias]``; :class:`TaskNotAllowed` if none is."""
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


#: The topics run by :func:`run_task_job`; filled by the backends as they are created.
task_topics = TaskTopics(run_task_job)
