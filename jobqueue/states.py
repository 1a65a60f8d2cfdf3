"""A job's states, an attempt's outcomes and a topic's isolations: plain choices every layer may import."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class JobStatus(models.TextChoices):
    WAITING = "waiting", _("waiting")
    SCHEDULED = "scheduled", _("scheduled")
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


ACTIVE_STATUSES = (JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING)
PENDING_STATUSES = (JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED)
FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

#: The statuses the hot paths write, as the plain text a row holds (a member's ``.value``
#: is a Python call per use).
QUEUED_TEXT, SCHEDULED_TEXT, RUNNING_TEXT, SUCCEEDED_TEXT = (
    JobStatus.QUEUED.value, JobStatus.SCHEDULED.value, JobStatus.RUNNING.value, JobStatus.SUCCEEDED.value)


class ExecutionOutcome(models.TextChoices):
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    RETRY = "retry", _("failed, will retry")
    TIMEOUT = "timeout", _("timed out")
    LOST = "lost", _("lost (worker died)")
    ABORTED = "aborted", _("aborted")
    CANCELLED = "cancelled", _("cancelled")


class Isolation(models.TextChoices):
    INLINE = "inline", _("inline (in the worker process)")
    PROCESS = "process", _("process (a forked child per job)")
