"""The ``django.tasks`` backend under its former path: ``jobqueue.contrib.tasks`` holds it.

``TASKS = {"default": {"BACKEND": "jobqueue.backends.JobQueueBackend"}}`` keeps working.
"""

from .contrib.tasks.backend import JobQueueBackend, JobQueueTask, backend_for, run_task_job, task_topics
from .contrib.tasks.exceptions import InvalidTaskArguments, TaskCancelled, TaskFailed, TaskLost, TaskNotAllowed
from .contrib.tasks.loading import load_task
from .contrib.tasks.results import STATUS_MAP, attempts_of, error_class_of
from .exceptions import DuplicateJob

#: The dotted path of the exception class an Execution row records (its former name).
exception_class_path = error_class_of

__all__ = [
    "STATUS_MAP",
    "DuplicateJob",
    "InvalidTaskArguments",
    "JobQueueBackend",
    "JobQueueTask",
    "TaskCancelled",
    "TaskFailed",
    "TaskLost",
    "TaskNotAllowed",
    "attempts_of",
    "backend_for",
    "error_class_of",
    "exception_class_path",
    "load_task",
    "run_task_job",
    "task_topics",
]
