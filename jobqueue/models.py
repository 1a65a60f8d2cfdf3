"""Topic, Job and Execution: the database holds the truth about every job.

State changes are methods whose ``UPDATE`` names the state it leaves
(``WHERE status = 'queued'``), so two workers can never both win a transition.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, router, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from . import engine
from .conf import DEFAULT_ISOLATION, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT, settings
from .constants import (
    ENTITY_ID_COLUMN_LENGTH,
    ERROR_CLASS_MAX_LENGTH,
    JOB_KEY_MAX_LENGTH,
    MAX_PRIORITY,
    MAX_PROGRESS,
    MIN_PRIORITY,
    MIN_PROGRESS,
    PROGRESS_MESSAGE_MAX_LENGTH,
    RATE_MAX_LENGTH,
    SHELL_PERMISSION_CODENAME,
    STAGE_MAX_LENGTH,
    TOPIC_NAME_MAX_LENGTH,
)
from .exceptions import InvalidTransition  # noqa: F401 - documented in the methods' docstrings
from .ids import new_job_id, short_id
from .managers import JobManager, fresh_job_defaults
from .progress import record_progress
from .states import ACTIVE_STATUSES, FINISHED_STATUSES, PENDING_STATUSES, ExecutionOutcome, Isolation, JobStatus
from .topic_manager import TopicManager
from .validation import TOPIC_NAME_RE


def validate_rate(value: str) -> None:
    """A topic's ``rate`` (see :func:`jobqueue.engine.flow.parse_rate`)."""
    try:
        engine.flow.parse_rate(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Topic(models.Model):
    """A named queue with its runtime settings; jobs of a topic share one handler."""

    name = models.CharField(
        _("name"),
        max_length=TOPIC_NAME_MAX_LENGTH,
        unique=True,
        validators=[
            RegexValidator(
                TOPIC_NAME_RE,
                _("Lowercase letters, digits, '_', '-' and single dots, starting with a letter or digit."),
            )
        ],
    )
    description = models.TextField(_("description"), blank=True)
    is_paused = models.BooleanField(_("paused"), default=False)
    concurrency = models.PositiveIntegerField(
        _("concurrency"), default=1, help_text=_("Jobs of this topic that may run at once, across all workers.")
    )
    default_priority = models.SmallIntegerField(_("default priority"), default=0)
    max_attempts = models.PositiveIntegerField(_("max attempts"), default=DEFAULT_MAX_ATTEMPTS)
    timeout = models.PositiveIntegerField(_("timeout (seconds)"), default=DEFAULT_TIMEOUT)
    retry_backoff = models.FloatField(
        _("retry backoff (seconds)"), default=DEFAULT_RETRY_BACKOFF, help_text=_("Base of the exponential retry delay.")
    )
    isolation = models.CharField(_("isolation"), max_length=16, choices=Isolation.choices, default=DEFAULT_ISOLATION)
    next_topic = models.CharField(_("next topic"), max_length=TOPIC_NAME_MAX_LENGTH, blank=True)
    cron = models.CharField(_("cron schedule"), max_length=100, blank=True)
    # Flow control (engine/flow.py): limits shared by every worker.
    rate = models.CharField(
        _("rate limit"), max_length=RATE_MAX_LENGTH, blank=True,
        help_text=_("Job starts allowed across all workers, e.g. 100/m, 5/s, 1000/h; a burst after a colon "
                    "(100/m:10). Empty: no limit."),
    )
    key_concurrency = models.PositiveIntegerField(
        _("concurrency per key"), null=True, blank=True,
        help_text=_("Jobs with the same key that may run at once (on top of the topic's concurrency). "
                    "Empty: no limit."),
    )
    fair = models.BooleanField(
        _("turns between keys"), default=False,
        help_text=_("Within a priority, jobs of different keys start in turn (always so with a concurrency per key)."),
    )
    key_from = models.CharField(
        _("key from payload field"), max_length=100, blank=True,
        help_text=_("A job enqueued without a key takes the value of this payload field as its key."),
    )
    operator_overrides = models.JSONField(
        _("fields set by an operator"),
        default=list,
        blank=True,
        help_text=_("Fields changed in the admin; syncing handlers never overwrites them."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = TopicManager()

    class Meta:
        verbose_name = _("topic")
        verbose_name_plural = _("topics")
        ordering = ["name"]
        permissions = [
            ("pause_topic", _("Can pause and resume a topic")),
            ("unlock_topic", _("Can force-free a topic's slots")),
            ("purge_topic", _("Can purge a topic's queued jobs")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(default_priority__gte=MIN_PRIORITY, default_priority__lte=MAX_PRIORITY),
                name="jobqueue_topic_priority_range",
            ),
            models.CheckConstraint(condition=Q(concurrency__gte=1), name="jobqueue_topic_concurrency_min"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="jobqueue_topic_attempts_min"),
        ]

    def __str__(self) -> str:
        return self.name

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the topic: workers stop (or start) taking its jobs within a heartbeat."""
        type(self).objects.filter(pk=self.pk).update(is_paused=paused, updated_at=timezone.now())
        self.is_paused = paused
        topic = self.name
        transaction.on_commit(lambda: engine.safe_call(engine.set_paused, topic, paused))

    def clean(self) -> None:
        super().clean()
        validate_rate(self.rate)

    def flow_limits(self) -> engine.flow.FlowLimits | None:
        """This topic's flow options for the engine (``None`` when it has none)."""
        if not self.rate and self.key_concurrency is None and not self.fair:
            return None
        return engine.flow.FlowLimits(engine.flow.parse_rate(self.rate), self.key_concurrency, self.fair)

    def flow_state(self) -> dict[str, Any] | None:
        """The limits and how full they are now (``None`` if Redis is unreachable): the rate
        and the tokens left in its bucket, the concurrency per key, the keys waiting with
        their queued and running jobs (see :func:`jobqueue.engine.flow.state`)."""
        engine.flow.configure(self.name, self.flow_limits())
        return engine.safe_call(engine.flow.state, self.name)

    def unlock(self) -> list[Any]:
        """Free every slot of this topic by force (a crashed worker's too); returns the holders."""
        return engine.TopicLock.force_release(self.name)

    def holders(self) -> list[Any]:
        """Who holds this topic's slots now (``engine.Holder`` objects)."""
        return engine.TopicLock.holders(self.name)


class Job(models.Model):
    """One unit of work for a topic's handler."""

    id = models.UUIDField(_("id"), primary_key=True, default=new_job_id, editable=False)
    topic = models.ForeignKey(
        Topic,
        verbose_name=_("topic"),
        to_field="name",
        db_column="topic",
        on_delete=models.PROTECT,
        related_name="jobs",
        db_index=False,  # covered by the (topic, status) index
    )
    status = models.CharField(_("status"), max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    priority = models.SmallIntegerField(
        _("priority"),
        default=0,
        help_text=format_lazy(_("{low}..{high}; higher runs first."), low=MIN_PRIORITY, high=MAX_PRIORITY),
    )
    payload = models.JSONField(_("payload"), default=dict, blank=True)
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    progress = models.PositiveSmallIntegerField(_("progress"), default=MIN_PROGRESS)
    progress_message = models.CharField(_("progress message"), max_length=PROGRESS_MESSAGE_MAX_LENGTH, blank=True)
    stage = models.CharField(_("stage"), max_length=STAGE_MAX_LENGTH, blank=True)
    # NULL, not "", for "no entity": the partial unique constraint must ignore such jobs.
    entity_id = models.CharField(  # noqa: DJ001
        _("entity id"), max_length=ENTITY_ID_COLUMN_LENGTH, null=True, blank=True
    )
    key = models.CharField(  # noqa: DJ001
        _("key"), max_length=JOB_KEY_MAX_LENGTH, null=True, blank=True,
        help_text=_("What the topic's concurrency per key and turns between keys count by (e.g. a tenant)."),
    )
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        db_index=False,  # a partial index below skips the many jobs without a parent
    )
    depends_on = models.ManyToManyField(
        "self", verbose_name=_("depends on"), symmetrical=False, blank=True, related_name="dependents"
    )
    has_dependents = models.BooleanField(
        _("has dependents"), default=False, editable=False,
        help_text=_("Some job depends on this one (saves a query when a job without dependents finishes)."),
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    max_attempts = models.PositiveIntegerField(_("max attempts"), default=DEFAULT_MAX_ATTEMPTS)
    run_after = models.DateTimeField(_("run after"), null=True, blank=True)
    timeout = models.PositiveIntegerField(_("timeout (seconds)"), default=DEFAULT_TIMEOUT)
    worker_id = models.CharField(_("worker"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    queued_at = models.DateTimeField(_("queued"), null=True, blank=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    trace_context = models.JSONField(
        _("trace context"), null=True, blank=True, editable=False,
        help_text=_("The OpenTelemetry context of the span that enqueued the job (see jobqueue.tracing)."),
    )

    objects = JobManager()

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-created_at"]
        get_latest_by = "created_at"
        permissions = [
            ("requeue_job", _("Can requeue a job")),
            ("cancel_job", _("Can cancel a job")),
            ("change_priority_job", _("Can change a job's priority")),
            ("run_now_job", _("Can run a scheduled job now")),
            (SHELL_PERMISSION_CODENAME, _("Can enqueue a shell-topic job")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=MIN_PRIORITY, priority__lte=MAX_PRIORITY), name="jobqueue_job_priority_range"
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=MIN_PROGRESS, progress__lte=MAX_PROGRESS), name="jobqueue_job_progress_range"
            ),
            models.UniqueConstraint(
                fields=["topic", "entity_id"],
                condition=Q(status__in=ACTIVE_STATUSES, entity_id__isnull=False),
                name="jobqueue_job_active_entity_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["-created_at"], name="jobqueue_job_created_idx"),
            models.Index(fields=["status", "-created_at"], name="jobqueue_job_status_idx"),
            models.Index(fields=["topic", "status"], name="jobqueue_job_topic_status_idx"),
            # topic last: the dashboard's jobs finished per topic in the last 24 h are counted
            # from the index alone (at 10,000,000 rows, 86 ms instead of a 1.4 s table scan).
            models.Index(fields=["status", "finished_at", "topic"], name="jobqueue_job_finished_idx"),
            models.Index(
                fields=["topic", "-priority", "queued_at"],
                condition=Q(status="queued"),
                name="jobqueue_job_queued_idx",
            ),
            models.Index(fields=["run_after"], condition=Q(status="scheduled"), name="jobqueue_job_scheduled_idx"),
            models.Index(fields=["entity_id"], condition=Q(entity_id__isnull=False), name="jobqueue_job_entity_idx"),
            models.Index(fields=["parent"], condition=Q(parent__isnull=False), name="jobqueue_job_parent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.topic_id}:{self.short_id}"

    def delete(self, using: str | None = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        """Delete the job (its executions go with it), taking it off the metrics tally in the
        same transaction if the tally counts it as finished (:func:`jobqueue.tally.untally`)."""
        from .tally import untally, writing_db

        if self.pk is None:
            return super().delete(using=using, keep_parents=keep_parents)  # which refuses it
        this = type(self)._base_manager.filter(pk=self.pk)
        this = this.using(using or router.db_for_write(type(self), instance=self))
        with transaction.atomic(using=writing_db(this)):
            untally(this)
            return super().delete(using=using, keep_parents=keep_parents)

    @property
    def short_id(self) -> str:
        """The id's last hex digits (see :func:`jobqueue.ids.short_id`)."""
        return short_id(self.id)

    @property
    def attempt(self) -> int:
        """The number of the attempt now running (1 for the first)."""
        return self.attempts

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    # -- state transitions: see jobqueue.transitions --------------------------------------
    # The imports below are inside the methods: the transitions sit above the models.

    def cancel(self, reason: str = "") -> bool:
        """Cancel a pending job now, or ask a running one to abort.

        Returns ``True`` if the job is (or will be) cancelled; raises
        :class:`InvalidTransition` for a finished job.
        """
        from .transitions import manual

        return manual.cancel(self, reason)

    def requeue(self, *, reset_attempts: bool = True) -> None:
        """Put a failed or cancelled job back in its queue."""
        from .transitions import manual

        manual.requeue(self, reset_attempts=reset_attempts)

    def run_now(self) -> None:
        """Move a scheduled job to the front of its wait: queue it now."""
        from .transitions import manual

        manual.run_now(self)

    def set_priority(self, priority: int) -> None:
        """Change the priority of a pending job, in the database and in its Redis queue."""
        from .transitions import manual

        manual.set_priority(self, priority)

    def set_progress(self, percent: float | None = None, message: str = "", stage: str = "") -> None:
        """Record progress (0-100) with an optional message and stage; throttled while running."""
        record_progress(self, percent, message, stage)

    def should_abort(self) -> bool:
        """True once someone asked this running job to stop (``job.cancel()``)."""
        requested = bool(engine.safe_call(engine.abort_requested, self.topic_id, str(self.pk)))
        if requested:
            self._abort_seen = True  # the worker records the attempt as cancelled, whatever it returns
        return requested

    @property
    def position_in_queue(self) -> int | None:
        """0-based place in its topic's queue (0 runs next), or ``None`` if not queued."""
        if self.status != JobStatus.QUEUED:
            return None
        return engine.position(self.topic_id, str(self.pk))

    @property
    def data_dir(self) -> str | None:
        """The job's folder under ``JOBQUEUE["DATA_DIR"]``, or ``None`` when that is unset."""
        base = settings.DATA_DIR
        return os.path.join(str(base), str(self.pk)) if base else None


class Execution(models.Model):
    """One attempt at running a job."""

    job = models.ForeignKey(
        Job,
        verbose_name=_("job"),
        on_delete=models.CASCADE,
        related_name="executions",
        db_index=False,  # covered by the unique (job, attempt) constraint
    )
    attempt = models.PositiveIntegerField(_("attempt"))
    worker_id = models.CharField(_("worker"), max_length=200, blank=True)
    hostname = models.CharField(_("host"), max_length=255, blank=True)
    pid = models.PositiveIntegerField(_("pid"), null=True, blank=True)
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=ExecutionOutcome.choices, default=ExecutionOutcome.RUNNING
    )
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    stdout = models.TextField(_("stdout"), blank=True)
    stderr = models.TextField(_("stderr"), blank=True)
    error = models.TextField(_("error"), blank=True)
    error_class = models.CharField(
        _("error class"),
        max_length=ERROR_CLASS_MAX_LENGTH,
        blank=True,
        help_text=_("The dotted path of the exception that ended the attempt, such as builtins.ValueError."),
    )
    traceback = models.TextField(_("traceback"), blank=True)
    duration = models.FloatField(_("duration (seconds)"), null=True, blank=True)

    class Meta:
        verbose_name = _("execution")
        verbose_name_plural = _("executions")
        ordering = ["job", "attempt"]
        constraints = [models.UniqueConstraint(fields=["job", "attempt"], name="jobqueue_execution_attempt_uniq")]
        indexes = [
            models.Index(fields=["finished_at", "outcome"], name="jobqueue_exec_finished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.attempt} {self.outcome}"


class MetricsTally(models.Model):
    """What a topic's finished history adds to its metrics, so that rebuilding a lost
    metrics hash reads only the rows that finished since (see :mod:`jobqueue.resync`).

    One row per topic holds the hash's fields (counters, non-cumulative buckets, sums in
    microseconds) counted from the rows whose time stamp is before the watermark; the row
    whose ``topic`` is empty holds that watermark in ``until``, shared by every topic.
    Workers move it forward a bounded number of rows at a time (:func:`jobqueue.resync.roll_up`).
    """

    topic = models.CharField(_("topic"), max_length=TOPIC_NAME_MAX_LENGTH, primary_key=True, blank=True)
    until = models.DateTimeField(_("counted until"), null=True, blank=True)
    counts = models.JSONField(_("counts"), default=dict, blank=True)

    class Meta:
        verbose_name = _("metrics tally")
        verbose_name_plural = _("metrics tallies")

    def __str__(self) -> str:
        return self.topic or "(watermark)"


#: What a new job holds in the columns enqueue() does not always set: the model's own defaults.
FRESH_JOB: dict[str, Any] = fresh_job_defaults(Job)

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED_STATUSES",
    "PENDING_STATUSES",
    "Execution",
    "ExecutionOutcome",
    "FRESH_JOB",
    "Isolation",
    "Job",
    "JobStatus",
    "MetricsTally",
    "Topic",
]

# Registered with the app here, where Django looks for models.
from .models_api import ApiToken  # noqa: E402, F401
