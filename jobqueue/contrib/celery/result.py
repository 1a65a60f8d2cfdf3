"""What ``.delay()`` and ``.apply_async()`` return: a :class:`JobResult`, read from the job's row.

There is no result backend to ask: the job is the result. ``get()`` polls the
database until the job (for a chain, the chain's last job) is finished.
``AsyncResult`` (a Celery result backend's) is not provided.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from django.db import router, transaction

from .exceptions import JobFailed, NotSupported

if TYPE_CHECKING:
    from ...models import Job

#: Seconds between two reads of the job's row while ``get()`` waits.
POLL_INTERVAL = 0.1

#: A job's status as Celery names task states.
CELERY_STATES = {
    "waiting": "PENDING",
    "scheduled": "PENDING",
    "queued": "PENDING",
    "running": "STARTED",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "REVOKED",
}
_FINISHED = ("succeeded", "failed", "cancelled")


class JobResult:
    """The job a call became (for a chain: its first job, followed to its last on ``get()``)."""

    def __init__(self, job_id: uuid.UUID | str, steps: int = 1, job: Job | None = None):
        self.job_id = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
        self.steps = steps
        self._job = job

    def __repr__(self) -> str:
        return f"<JobResult {self.id}{f' (chain of {self.steps})' if self.steps > 1 else ''}>"

    def __str__(self) -> str:
        return self.id

    @property
    def id(self) -> str:
        """The job's id, as a string (a Celery task id is one too)."""
        return str(self.job_id)

    @property
    def job(self) -> Job:
        """The (first) job, read from the database."""
        from ...models import Job  # importing a tasks module must not need the models

        self._job = Job.objects.get(pk=self.job_id)
        return self._job

    @property
    def status(self) -> str:
        """The job's status (``queued``, ``running``, ``succeeded``...)."""
        return self.job.status

    @property
    def state(self) -> str:
        """The job's status as Celery names it (``PENDING``, ``STARTED``, ``SUCCESS``...)."""
        return CELERY_STATES[self.status]

    def ready(self) -> bool:
        return self.status in _FINISHED

    def successful(self) -> bool:
        return self.status == "succeeded"

    def failed(self) -> bool:
        return self.status in ("failed", "cancelled")

    @property
    def result(self) -> Any:
        """The job's result once it succeeded, else its error (``None`` while it is pending)."""
        job = self.job
        if job.status == "succeeded":
            return job.result
        return job.error or None

    def get(self, timeout: float | None = None, interval: float = POLL_INTERVAL, propagate: bool = True) -> Any:
        """Wait for the job (for a chain, its last step) to finish and return its result.

        A failed or cancelled job raises :class:`JobFailed` with its error (or, with
        ``propagate=False``, returns the error). ``TimeoutError`` after ``timeout``
        seconds. A job enqueued in a transaction that has not committed cannot run, so
        waiting for it inside that transaction raises at once.
        """
        from ...models import Job

        if transaction.get_connection(router.db_for_write(Job)).in_atomic_block:
            raise NotSupported(
                f"JobResult.get() inside a transaction: job {self.id} cannot run before the transaction commits "
                f"(and this one would not see it finish). Wait after the commit."
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        job_id = self.job_id
        for step in range(self.steps):
            row = self._wait(Job, job_id, deadline, interval)
            if row["status"] != "succeeded":
                message = f"Job {job_id} ({row['topic_id']}) {row['status']}: {row['error'] or 'no error recorded'}"
                if propagate:
                    raise JobFailed(message, job_id=job_id, status=row["status"], error=row["error"])
                return row["error"]
            if step == self.steps - 1:
                return row["result"]
            child = Job.objects.filter(parent_id=job_id).order_by("created_at").values_list("pk", flat=True).first()
            if child is None:
                raise JobFailed(
                    f"Job {job_id} ({row['topic_id']}) succeeded but created no job for the next step of its chain.",
                    job_id=job_id,
                    status=row["status"],
                )
            job_id = child
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _wait(model: type[Job], job_id: uuid.UUID, deadline: float | None, interval: float) -> dict[str, Any]:
        while True:
            row = model.objects.filter(pk=job_id).values("status", "result", "error", "topic_id").first()
            if row is None:
                raise JobFailed(f"Job {job_id} does not exist (it was deleted, or never committed).", job_id=job_id)
            if row["status"] in _FINISHED:
                return row
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"Job {job_id} ({row['topic_id']}) is still {row['status']}.")
            time.sleep(interval)


def AsyncResult(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - Celery's name
    raise NotSupported(
        "AsyncResult (a Celery result backend's) is not supported: a job is its own result. Keep what "
        ".delay() returns (a JobResult), or use JobResult(job_id), or read the job: Job.objects.get(pk=job_id)."
    )
