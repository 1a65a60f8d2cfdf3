"""Exceptions raised by jobqueue's public API."""

from __future__ import annotations


class JobQueueError(Exception):
    """Base class of every jobqueue error."""


class InvalidJob(JobQueueError, ValueError):
    """Bad input to ``enqueue()``: nothing was written."""


class UnknownTopic(InvalidJob):
    """The topic has no handler and no Topic row."""


class InvalidPayload(InvalidJob):
    """The payload cannot be encoded as JSON."""


class PayloadTooLarge(InvalidJob):
    """The payload's JSON encoding is over ``JOBQUEUE["MAX_PAYLOAD_BYTES"]``."""


class DuplicateJob(JobQueueError):
    """A job for the same topic and entity id is already running."""

    def __init__(self, message: str, existing_id: object = None):
        super().__init__(message)
        self.existing_id = existing_id


class InvalidTransition(JobQueueError):
    """The job is not in a state that allows this change (e.g. requeueing a running job)."""


class DependencyCycle(InvalidJob):
    """A set of dependencies refers back to itself."""


class ProtectedTopic(InvalidJob):
    """A chain read from data leads into a topic whose jobs need a permission to enqueue."""
