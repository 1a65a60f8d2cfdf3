"""The errors of the ``django.tasks`` backend, and the ones it records for a task."""

from __future__ import annotations

from ...exceptions import InvalidPayload
from .compat import InvalidTask


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
