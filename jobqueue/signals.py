"""Signals sent as jobs move through their life (``sender`` is the :class:`~jobqueue.models.Job` class).

Every signal passes ``job``; ``job_succeeded`` also passes ``result``,
``job_failed`` passes ``error`` and ``will_retry``.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

job_enqueued = Signal()
job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()
job_finished = Signal()


#: The dispatch uid of the chaining receiver, the one receiver jobqueue itself connects.
CHAINING_UID = "jobqueue.chaining"


def quiet_success() -> bool:
    """True when a success has no receivers but chaining (and chaining has nothing to do
    is checked by the caller): the worker may then record it without sending signals."""
    if job_finished.receivers:
        return False
    try:
        return all(entry[0][0] == CHAINING_UID for entry in job_succeeded.receivers)
    except (IndexError, TypeError):  # a Django whose dispatcher stores receivers differently
        return False


def send_finished(job: Any) -> None:
    """Send ``job_finished`` and release (or cancel) the jobs that depend on ``job``."""
    from .workflow import release_dependents

    job_finished.send(sender=type(job), job=job)
    # A dependent added after this row was read is released by the worker's sweep.
    if getattr(job, "has_dependents", True):
        release_dependents(job)
