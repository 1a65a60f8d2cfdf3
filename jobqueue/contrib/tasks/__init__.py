"""The ``django.tasks`` backend: ``@task`` functions stored as jobs, run by jobqueue workers.

::

    TASKS = {"default": {"BACKEND": "jobqueue.contrib.tasks.JobQueueBackend", "QUEUES": ["default"]}}

The modules: :mod:`.backend` (the backend, its task class and the handler of its
queues), :mod:`.topics` (which topics are task queues), :mod:`.results` (a job as a
``TaskResult``), :mod:`.loading` (finding a job's task safely), :mod:`.bridge` (the
``task_started`` and ``task_finished`` signals), :mod:`.exceptions` and :mod:`.compat`
(``django.tasks``, or the ``django-tasks`` backport on Django 5.2).

Names are imported from those modules on first use, so importing this package loads
neither the tasks framework nor jobqueue's models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:
    from .backend import JobQueueBackend, JobQueueTask, backend_for, run_task_job, task_topics
    from .exceptions import InvalidTaskArguments, TaskCancelled, TaskFailed, TaskLost, TaskNotAllowed
    from .loading import load_task
    from .results import STATUS_MAP, attempts_of, error_class_of, result_from_job
    from .topics import TaskTopics

_MODULE_OF = {
    "JobQueueBackend": "backend",
    "JobQueueTask": "backend",
    "backend_for": "backend",
    "run_task_job": "backend",
    "task_topics": "backend",
    "InvalidTaskArguments": "exceptions",
    "TaskCancelled": "exceptions",
    "TaskFailed": "exceptions",
    "TaskLost": "exceptions",
    "TaskNotAllowed": "exceptions",
    "load_task": "loading",
    "STATUS_MAP": "results",
    "attempts_of": "results",
    "error_class_of": "results",
    "result_from_job": "results",
    "TaskTopics": "topics",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)


__all__ = [
    "STATUS_MAP",
    "InvalidTaskArguments",
    "JobQueueBackend",
    "JobQueueTask",
    "TaskCancelled",
    "TaskFailed",
    "TaskLost",
    "TaskNotAllowed",
    "TaskTopics",
    "attempts_of",
    "backend_for",
    "error_class_of",
    "load_task",
    "result_from_job",
    "run_task_job",
    "task_topics",
]
