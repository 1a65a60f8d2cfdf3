"""jobqueue: persistent, topic-based job pipelines for Django.

``from jobqueue import handler, Next, Retry`` is the handler author's API; jobs
are created with ``Job.objects.enqueue()`` (``jobqueue.models.Job``).
"""

from .chaining import Next
from .exceptions import DuplicateJob, InvalidJob, JobQueueError, UnknownTopic
from .registry import handler


class Retry(Exception):  # noqa: N818 - raised by handlers, read as "retry"
    """Raise from a handler to ask for another attempt after ``delay`` seconds."""

    def __init__(self, delay: float | None = None, reason: str = ""):
        super().__init__(reason or "retry requested")
        self.delay = delay
        self.reason = reason


__all__ = ["DuplicateJob", "InvalidJob", "JobQueueError", "Next", "Retry", "UnknownTopic", "handler"]
__version__ = "0.1.0"
