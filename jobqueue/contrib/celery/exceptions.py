"""The errors of the Celery compatibility layer."""

from __future__ import annotations

from ...exceptions import JobQueueError


class NotSupported(JobQueueError, NotImplementedError):  # noqa: N818 - reads as "this is not supported"
    """A Celery feature jobqueue does not provide; the message names what to use instead."""


class PublishError(JobQueueError):
    """A message could not be handed to the Celery broker (the sending job is retried)."""


class JobFailed(JobQueueError):
    """``JobResult.get()`` on a job that failed or was cancelled; carries the job's error."""

    def __init__(self, message: str, job_id: object = None, status: str = "", error: str = ""):
        super().__init__(message)
        self.job_id = job_id
        self.status = status
        self.error = error
