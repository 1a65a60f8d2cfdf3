"""Signals sent as jobs move through their life (``sender`` is the :class:`~jobqueue.models.Job` class).

Every signal passes ``job``; ``job_succeeded`` also passes ``result``,
``job_failed`` passes ``error`` and ``will_retry``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

job_enqueued = Signal()
job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()
job_finished = Signal()


#: The dispatch uid of the chaining receiver, the one receiver jobqueue itself connects.
CHAINING_UID = "jobqueue.chaining"


#: Receivers jobqueue connects that act only on some jobs: dispatch uid -> "does it act
#: on this job?". A success no receiver acts on is recorded without sending signals.
SCOPED_RECEIVERS: dict[str, Callable[[Any], bool]] = {}


def quiet_success(job: Any) -> bool:
    """True when no receiver would act on this job's success (chaining having nothing to
    do is checked by the caller): the worker may then record it without sending signals."""
    try:
        finished = [entry[0][0] for entry in job_finished.receivers]
        succeeded = [entry[0][0] for entry in job_succeeded.receivers]
    except (IndexError, TypeError):  # a Django whose dispatcher stores receivers differently
        return False
    for uid in finished + [u for u in succeeded if u != CHAINING_UID]:
        acts_on = SCOPED_RECEIVERS.get(uid) if isinstance(uid, str) else None
        if acts_on is None or acts_on(job):
            return False
    return True


def send_finished(job: Any) -> None:
    """Send ``job_finished`` and release (or cancel) the jobs that depend on ``job``."""
    from .workflow import release_dependents

    job_finished.send(sender=type(job), job=job)
    # A dependent added after this row was read is released by the worker's sweep.
    if getattr(job, "has_dependents", True):
        release_dependents(job)
