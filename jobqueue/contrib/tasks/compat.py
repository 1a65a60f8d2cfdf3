"""Where the tasks framework lives: ``django.tasks`` (Django >= 6.0), else the
``django-tasks`` backport (import name ``django_tasks``).

Importing this module never fails: :data:`AVAILABLE` says whether either was
found, and :func:`connect_configured_backends` (called at app ready) does
nothing without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


def _find_package() -> str | None:
    for name in ("django.tasks", "django_tasks"):
        try:
            __import__(name)
        except ImportError:
            continue
        return name
    return None


#: The import name of the tasks framework found, or ``None``.
PACKAGE: str | None = _find_package()
AVAILABLE = PACKAGE is not None

# Type checkers read the first branch (django-stubs describes django.tasks whatever the
# Django version); the backport's layout differs in a few module names.
if TYPE_CHECKING or PACKAGE == "django.tasks":
    from django.tasks import (
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
elif PACKAGE == "django_tasks":
    from django_tasks import (
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django_tasks import exceptions as _exceptions
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    # Named InvalidTaskError before the backport took django.tasks' name (no alias kept).
    InvalidTask = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError


def connect_configured_backends() -> None:
    """Create every jobqueue backend named in ``settings.TASKS``.

    A backend registers its queues as topics when it is created; doing it at app
    ready means a worker knows those topics before any task module is imported.
    """
    if not AVAILABLE:
        return
    from django.conf import settings
    from django.utils.module_loading import import_string

    from .backend import JobQueueBackend

    configured: Any = getattr(settings, "TASKS", None) or {}
    if not isinstance(configured, dict):
        return  # Django's own checks report a malformed TASKS
    for alias, params in configured.items():
        path = params.get("BACKEND") if isinstance(params, dict) else None
        if not isinstance(path, str):
            continue
        try:
            backend_class = import_string(path)
        except ImportError:
            continue  # reported by the tasks framework when the backend is used
        if isinstance(backend_class, type) and issubclass(backend_class, JobQueueBackend):
            task_backends[alias]


__all__ = [
    "AVAILABLE",
    "DEFAULT_TASK_QUEUE_NAME",
    "PACKAGE",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultMismatch",
    "TaskResultStatus",
    "connect_configured_backends",
    "default_task_backend",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
