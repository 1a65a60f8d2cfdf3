"""How a worker ends an attempt: what the handler did (an :class:`Outcome`) becomes the
attempt's Execution row and one transition of :mod:`jobqueue.transitions.attempt`
(``succeed``, ``retry``, ``fail``, ``abort`` or ``interrupt``), which owns the row
updates, Redis and the follow-ups.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import traceback
from dataclasses import dataclass, field
from typing import Any

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from ..chaining import storable_result
from ..conf import settings
from ..constants import ERROR_CLASS_MAX_LENGTH
from ..logging import job_extra
from ..models import Execution, ExecutionOutcome, Job, JobStatus
from ..progress import flush_progress
from ..storable import exception_class_path, exception_text, storable_json, storable_text
from ..transitions import attempt
from ..transitions.attempt import HELD, HOSTNAME, NextJob, claim, record_held, success_tally, unclaim
from ..transitions.recovery import give_back, recover

logger = logging.getLogger("jobqueue.worker")

__all__ = [
    "HELD", "HOSTNAME", "NextJob", "Outcome", "backoff_delay", "claim", "finish", "give_back", "record_held", "recover",
    "success_tally", "unclaim",
]


@dataclass
class Outcome:
    """What running a handler produced (inline or in a child process)."""

    ok: bool
    result: Any = None
    error: str = ""
    error_class: str = ""  # the dotted path of the exception that ended the attempt, if any
    traceback: str = ""
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    aborted: bool = False  # cancelled by job.cancel()
    interrupted: bool = False  # the worker was told to stop now (second signal)
    retry_delay: float | None = None  # the handler raised Retry(delay=...)
    extra: dict[str, Any] = field(default_factory=dict)
    # What an inline handler raised (a forked child's stays in the child): for tracing.
    exception: BaseException | None = field(default=None, repr=False, compare=False)


def _fill_execution(execution: Execution, outcome: Outcome, result_outcome: str) -> None:
    now = timezone.now()
    execution.finished_at = now
    execution.outcome = result_outcome
    execution.duration = (now - execution.started_at).total_seconds()
    # A handler running a subprocess may have set the exit code on the execution itself.
    execution.exit_code = outcome.exit_code if outcome.exit_code is not None else execution.exit_code
    limit = settings.MAX_OUTPUT_BYTES
    execution.stdout = storable_text((outcome.stdout or execution.stdout or "")[-limit:])
    execution.stderr = storable_text((outcome.stderr or execution.stderr or "")[-limit:])
    execution.error = storable_text(outcome.error)
    execution.error_class = outcome.error_class[:ERROR_CLASS_MAX_LENGTH]
    execution.traceback = storable_text(outcome.traceback)


def backoff_delay(job: Job, attempt: int) -> float:
    """Exponential backoff with +/-25 % jitter: base * 2^(attempt-1), capped."""
    base = float(job.topic.retry_backoff if job.topic_id else settings.DEFAULT_RETRY_BACKOFF)
    delay = min(base * (2 ** max(attempt - 1, 0)), float(settings.MAX_RETRY_DELAY))
    return max(0.0, delay * random.uniform(0.75, 1.25))


def finish(job: Job, execution: Execution, outcome: Outcome, defer_ack: bool = False,
           next_job: NextJob | None = None) -> str:
    """Record an attempt's outcome; returns the job's new status (or ``"lost"`` if the
    job was no longer ours).

    With ``defer_ack`` a success is not acknowledged in Redis: the caller does it
    (the worker fuses it with its next pop). Until then the lease stands, so a crash
    in between only makes the reaper acknowledge the finished job.

    With ``next_job``, a success that nothing follows also claims the worker's next
    job, in the same statement (PostgreSQL): see :class:`NextJob`.
    """
    status = _record(job, execution, outcome, defer_ack, next_job)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("Job %s of topic %s, attempt %s/%s: %s (%.3fs); the job is %s now.", job.pk, job.topic_id,
                     job.attempts, job.max_attempts, execution.get_outcome_display(), execution.duration or 0.0,
                     status, extra={**job_extra(job), "outcome": execution.outcome, "duration": execution.duration})
    return status


def _record(job: Job, execution: Execution, outcome: Outcome, defer_ack: bool, next_job: NextJob | None) -> str:
    """Write the attempt's Execution row and the transition its outcome calls for."""
    # An inline handler's last progress report may still be held back by the throttle.
    flush_progress(job)
    if outcome.ok and not outcome.aborted:
        try:
            result = storable_json(storable_result(outcome.result))
        except (TypeError, ValueError) as exc:
            outcome = Outcome(ok=False, error=f"Handler returned a result that is not JSON: {exc}",
                              error_class=exception_class_path(exc), exit_code=outcome.exit_code,
                              stdout=outcome.stdout, stderr=outcome.stderr)
        else:
            before = (job.status, job.result, job.finished_at, job.progress, job.error)
            try:
                _fill_execution(execution, outcome, ExecutionOutcome.SUCCEEDED)
                return attempt.succeed(job, execution, result, outcome.result, defer_ack, next_job)
            except (OperationalError, InterfaceError):
                raise  # the worker retries while the database is unreachable
            except Exception as exc:
                # A successor that cannot be created (or a failing receiver) rolled the
                # success back: the attempt fails with the reason instead.
                job.status, job.result, job.finished_at, job.progress, job.error = before
                logger.warning("Job %s succeeded but its success could not be recorded: %s", job.pk, exc,
                               extra=job_extra(job))
                outcome = Outcome(ok=False, error=f"The success could not be recorded: {exception_text(exc)}",
                                  error_class=exception_class_path(exc), traceback=traceback.format_exc(),
                                  exit_code=outcome.exit_code, stdout=outcome.stdout, stderr=outcome.stderr)
    if outcome.aborted:
        _fill_execution(execution, outcome, ExecutionOutcome.CANCELLED)
        return attempt.abort(job, execution)
    if outcome.interrupted:
        outcome.error = outcome.error or "aborted: the worker was stopped"
        _fill_execution(execution, outcome, ExecutionOutcome.ABORTED)
        return attempt.interrupt(job, execution)
    return _fail(job, execution, outcome)


def _fail(job: Job, execution: Execution, outcome: Outcome) -> str:
    """``retry`` with backoff while attempts are left, else ``fail``."""
    retry = job.attempts < job.max_attempts
    if outcome.retry_delay is not None:
        delay = max(0.0, float(outcome.retry_delay))
    else:
        delay = backoff_delay(job, job.attempts)
    if outcome.timed_out:
        kind = ExecutionOutcome.TIMEOUT
    else:
        kind = ExecutionOutcome.RETRY if retry else ExecutionOutcome.FAILED
    error = storable_text(outcome.error) or "failed"
    _fill_execution(execution, outcome, kind)
    retry_at = timezone.now() + dt.timedelta(seconds=delay) if retry else None
    status = attempt.fail(job, execution, error, retry_at)
    if status == JobStatus.SCHEDULED:
        logger.info("Job %s failed (attempt %s/%s), retrying in %.1fs: %s", job.pk, job.attempts,
                    job.max_attempts, delay, error.splitlines()[0] if error else "", extra=job_extra(job))
    elif status == JobStatus.FAILED:
        logger.warning("Job %s failed after %s attempt(s): %s", job.pk, job.attempts, error, extra=job_extra(job))
    return status


