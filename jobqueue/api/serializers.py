"""Jobs as JSON, and the fields a client may send to create one."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.utils.dateparse import parse_datetime

from ..constants import MAX_INT
from .errors import ApiError

JOB_FIELDS = (
    "topic",
    "status",
    "priority",
    "payload",
    "result",
    "error",
    "progress",
    "progress_message",
    "stage",
    "entity_id",
    "attempts",
    "max_attempts",
    "timeout",
    "worker_id",
)
JOB_TIMES = ("run_after", "created_at", "updated_at", "queued_at", "started_at", "finished_at")
#: The keys of a job's JSON (:func:`job_data`), in order.
JOB_KEYS = ("id", *JOB_FIELDS, "parent", *JOB_TIMES)
EXECUTION_FIELDS = (
    "attempt",
    "worker_id",
    "hostname",
    "pid",
    "outcome",
    "exit_code",
    "error",
    "traceback",
    "duration",
)

#: The longest delay accepted, in seconds (about 31 years).
MAX_DELAY = 10**9
#: Jobs per page of a list unless ``page_size`` says otherwise, and the most it may say.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
#: The highest page number a list accepts.
MAX_PAGE = 10**9
#: The longest reason a cancel request may give, in characters.
MAX_REASON_LENGTH = 1000

#: What ``POST /jobs/`` accepts.
CREATE_FIELDS = frozenset(
    {
        "topic",
        "payload",
        "priority",
        "entity_id",
        "run_after",
        "delay",
        "max_attempts",
        "timeout",
        "depends_on",
        "parent",
    }
)


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_data(job: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(job.pk)}
    for name in JOB_FIELDS:
        data[name] = getattr(job, "topic_id" if name == "topic" else name)
    data["parent"] = str(job.parent_id) if job.parent_id else None
    for name in JOB_TIMES:
        data[name] = _time(getattr(job, name))
    return data


def job_detail(job: Any) -> dict[str, Any]:
    """A job with its dependencies, its attempts and, if queued, its place in the queue."""
    data = job_data(job)
    data["depends_on"] = [str(pk) for pk in job.depends_on.values_list("pk", flat=True)]
    data["position_in_queue"] = job.position_in_queue if job.status == "queued" else None
    data["executions"] = [
        {
            **{name: getattr(e, name) for name in EXECUTION_FIELDS},
            "started_at": _time(e.started_at),
            "finished_at": _time(e.finished_at),
        }
        for e in job.executions.order_by("attempt")
    ]
    return data


def _expect(data: dict[str, Any], name: str, types: tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        raise ApiError(400, "invalid", f"{name} must be {what}, not {value!r}.")
    return value


def _job_id(value: Any, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value) if isinstance(value, str) else uuid.UUID("")
    except ValueError:
        raise ApiError(400, "invalid", f"{name}: {value!r} is not a job id.") from None


def enqueue_arguments(data: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """``(topic, payload, keyword arguments)`` for ``Job.objects.enqueue`` from a request body.

    Types are checked here; ranges and everything else by ``enqueue()`` itself, so
    the API refuses exactly what the Python API refuses.
    """
    topic = data.get("topic")
    if not isinstance(topic, str):
        raise ApiError(400, "invalid", "topic is required and must be a string.")
    kwargs: dict[str, Any] = {
        "priority": _expect(data, "priority", (int,), "an integer"),
        "entity_id": _expect(data, "entity_id", (str,), "a string"),
        "max_attempts": _expect(data, "max_attempts", (int,), "an integer"),
        "timeout": _expect(data, "timeout", (int,), "an integer"),
        "delay": _expect(data, "delay", (int, float), "a number of seconds"),
    }
    # Beyond these, a database column or a datetime overflows.
    for name, limit in (("max_attempts", MAX_INT), ("timeout", MAX_INT), ("delay", MAX_DELAY)):
        if kwargs[name] is not None and kwargs[name] > limit:
            raise ApiError(400, "invalid", f"{name} must be at most {limit}, not {kwargs[name]!r}.")
    run_after = _expect(data, "run_after", (str,), "an ISO 8601 date-time")
    if run_after is not None:
        try:
            parsed = parse_datetime(run_after)
            if parsed is not None and parsed.tzinfo is not None:
                # In UTC: PostgreSQL refuses offsets past 15:59, and past year 9999 overflows here.
                parsed = parsed.astimezone(dt.timezone.utc)
        except (ValueError, OverflowError):
            parsed = None
        if parsed is None:
            raise ApiError(400, "invalid", f"run_after must be an ISO 8601 date-time, not {run_after!r}.")
        kwargs["run_after"] = parsed
    depends_on = _expect(data, "depends_on", (list,), "a list of job ids")
    if depends_on:
        kwargs["depends_on"] = [_job_id(value, "depends_on") for value in depends_on]
    parent = _expect(data, "parent", (str,), "a job id")
    if parent is not None:
        kwargs["parent"] = _job_id(parent, "parent")
    return topic, data.get("payload"), {k: v for k, v in kwargs.items() if v is not None}
