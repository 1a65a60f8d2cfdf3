"""The API's handlers; :mod:`jobqueue.api.urls` wraps them with :func:`~.endpoint.endpoint`."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlencode

from django.db import connections, router
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from .. import engine, registry
from ..constants import MAX_PROGRESS, MIN_PROGRESS, PROGRESS_MESSAGE_MAX_LENGTH, STAGE_MAX_LENGTH
from ..models import FINISHED_STATUSES, Job, JobStatus, Topic
from ..permissions import CHANGE_PRIORITY, VIEW_JOB, check_may_enqueue
from ..resync import job_counts
from ..validation import TOPIC_NAME_RE, validate_entity_id, validate_topic_name
from .endpoint import only_fields, read_json, refuse_unstorable_text
from .errors import ApiError, error_response
from .serializers import (
    CREATE_FIELDS,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    MAX_REASON_LENGTH,
    PAGE_SIZE,
    enqueue_arguments,
    job_data,
    job_detail,
)


def _job(job_id: str) -> Job:
    try:
        pk = uuid.UUID(job_id)
    except ValueError:
        raise ApiError(404, "not_found", f"No job {job_id!r}.") from None
    job = Job.objects.filter(pk=pk).first()
    if job is None:
        raise ApiError(404, "not_found", f"No job {job_id}.")
    return job


def _int_param(request: HttpRequest, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid", f"{name} must be an integer, not {raw!r}.") from None
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ApiError(400, "invalid", f"{name} must be {bounds}, not {value}.")
    return value


def unknown_endpoint(request: HttpRequest) -> HttpResponse:
    return error_response(404, "not_found", f"No API endpoint at {request.path}; see the schema.")


# -- jobs -----------------------------------------------------------------------------------


def list_jobs(request: HttpRequest) -> HttpResponse:
    """``GET /jobs/?status=&topic=&entity_id=&page=&page_size=``, newest first."""
    unknown = sorted(set(request.GET) - {"status", "topic", "entity_id", "page", "page_size"})
    if unknown:
        raise ApiError(400, "invalid", f"Unknown query parameter(s): {', '.join(unknown)}.")
    refuse_unstorable_text([*request.GET.keys(), *request.GET.values()], "the query")
    for name in ("status", "topic", "entity_id"):
        if request.GET.get(name) == "":
            raise ApiError(400, "invalid", f"{name} must not be empty; leave it out to list every job.")
    jobs = Job.objects.all()
    status = request.GET.get("status")
    if status:
        if status not in JobStatus.values:
            raise ApiError(
                400, "invalid", f"status must be one of {', '.join(JobStatus.values)}, not {status!r}."
            )
        jobs = jobs.filter(status=status)
    if request.GET.get("topic"):
        jobs = jobs.filter(topic_id=validate_topic_name(request.GET["topic"]))
    if request.GET.get("entity_id"):
        jobs = jobs.filter(entity_id=validate_entity_id(request.GET["entity_id"]))
    page = _int_param(request, "page", 1, 1, MAX_PAGE)
    size = _int_param(request, "page_size", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    count = jobs.count()
    offset = (page - 1) * size
    results = (
        [job_data(job) for job in jobs.order_by("-created_at", "-id")[offset : offset + size]]
        if offset < count
        else []
    )
    num_pages = max(1, -(-count // size))

    def link(number: int) -> str:
        params = {**request.GET.dict(), "page": str(number)}
        return f"{request.path}?{urlencode(params)}"

    return JsonResponse(
        {
            "count": count,
            "page": page,
            "page_size": size,
            "num_pages": num_pages,
            "next": link(page + 1) if page < num_pages else None,
            "previous": link(min(page - 1, num_pages)) if page > 1 else None,
            "results": results,
        }
    )


def create_job(request: HttpRequest) -> HttpResponse:
    """``POST /jobs/`` ``{"topic": ..., "payload": ..., "priority": ..., ...}``."""
    data = read_json(request)
    only_fields(data, CREATE_FIELDS)
    topic, payload, kwargs = enqueue_arguments(data)
    check_may_enqueue(request.user, topic)  # the shell topic, or a chain that leads into it
    payload = {} if payload is None else payload
    user = request.user
    job = Job.objects.enqueue(topic, payload, raise_priority=user.has_perm(CHANGE_PRIORITY), **kwargs)
    # enqueue() hands back the pending job of the same entity instead of a new one.
    created = job.payload is payload
    if not created and not user.has_perm(VIEW_JOB):
        # Only its id, as for a running one: the caller may not see that job.
        raise ApiError(
            409,
            "duplicate_job",
            f"Entity {job.entity_id!r} already has a pending job {job.pk} in topic {job.topic_id!r}.",
            existing_id=str(job.pk),
        )
    response = JsonResponse(job_data(job), status=201 if created else 200)
    response["Location"] = reverse("jobqueue_api:job", kwargs={"job_id": str(job.pk)})
    return response


def get_job(request: HttpRequest, job_id: str) -> HttpResponse:
    return JsonResponse(job_detail(_job(job_id)))


def delete_job(request: HttpRequest, job_id: str) -> HttpResponse:
    """``DELETE /jobs/{id}``: only a finished job (its executions go with it)."""
    job = _job(job_id)
    deleted, _ = Job.objects.filter(pk=job.pk, status__in=FINISHED_STATUSES).delete()
    if not deleted:
        raise ApiError(
            409, "invalid_transition", f"Job {job.pk} is {job.status}; only a finished job can be deleted."
        )
    return HttpResponse(status=204)


def set_progress(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/{id}/progress`` ``{"progress": 0-100, "message": "...", "stage": "..."}``
    for a running job."""
    job = _job(job_id)
    data = read_json(request)
    only_fields(data, {"progress", "message", "stage"})
    if not data:
        raise ApiError(400, "invalid", "Send at least one of progress, message, stage.")
    values: dict[str, Any] = {}
    progress = data.get("progress")
    if progress is not None:
        number = isinstance(progress, (int, float)) and not isinstance(progress, bool)
        if not number or not MIN_PROGRESS <= progress <= MAX_PROGRESS:
            raise ApiError(
                400, "invalid", f"progress must be a number from {MIN_PROGRESS} to {MAX_PROGRESS}, not {progress!r}."
            )
        values["progress"] = int(progress)
    limits = (("message", "progress_message", PROGRESS_MESSAGE_MAX_LENGTH), ("stage", "stage", STAGE_MAX_LENGTH))
    for field, column, limit in limits:
        value = data.get(field)
        if value is not None:
            if not isinstance(value, str) or len(value) > limit:
                raise ApiError(400, "invalid", f"{field} must be a string of at most {limit} characters.")
            values[column] = value
    if not values:
        raise ApiError(400, "invalid", "Send at least one of progress, message, stage.")
    # Guarded like every transition: a job that finished meanwhile is left alone.
    if not Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(**values):
        raise ApiError(
            409, "invalid_transition", f"Job {job.pk} is {job.status}; only a running job reports progress."
        )
    job.refresh_from_db()
    return JsonResponse(job_data(job))


def cancel_job(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/{id}/cancel`` ``{"reason": "..."}``: a pending job is cancelled at once,
    a running one is asked to stop (``202``)."""
    job = _job(job_id)
    data = read_json(request, required=False)
    only_fields(data, {"reason"})
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise ApiError(400, "invalid", f"reason must be a string of at most {MAX_REASON_LENGTH} characters.")
    job.cancel(reason)
    job.refresh_from_db()
    return JsonResponse(job_data(job), status=202 if job.status == JobStatus.RUNNING else 200)


def requeue_job(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/{id}/requeue`` ``{"reset_attempts": true}`` for a failed or cancelled job."""
    job = _job(job_id)
    data = read_json(request, required=False)
    only_fields(data, {"reset_attempts"})
    reset = data.get("reset_attempts", True)
    if not isinstance(reset, bool):
        raise ApiError(400, "invalid", "reset_attempts must be true or false.")
    job.requeue(reset_attempts=reset)
    job.refresh_from_db()
    return JsonResponse(job_data(job))


# -- stats and health -------------------------------------------------------------------------


def _empty_counts() -> dict[str, int]:
    return {status: 0 for status in JobStatus.values}


def stats(request: HttpRequest) -> HttpResponse:
    """``GET /stats``: job counts by status for every topic, and in total (finished ones
    from the metrics tally: :func:`jobqueue.resync.job_counts`)."""
    topics = {t.name: t for t in Topic.objects.order_by("name")}
    counts = job_counts(topics)  # bounded at any table size: see job_counts
    totals = _empty_counts()
    for by_status in counts.values():
        for status, n in by_status.items():
            totals[status] += n
    return JsonResponse(
        {
            "topics": [
                {
                    "topic": name,
                    "is_paused": topics[name].is_paused if name in topics else False,
                    "concurrency": topics[name].concurrency if name in topics else 1,
                    "rate": topics[name].rate if name in topics else "",
                    "key_concurrency": topics[name].key_concurrency if name in topics else None,
                    "by_status": counts[name],
                }
                for name in sorted(counts)
            ],
            "totals": totals,
        }
    )


def topic_stats(request: HttpRequest, topic: str) -> HttpResponse:
    """``GET /stats/{topic}``: counts by status and priority, Redis depths, slot holders."""
    row = Topic.objects.filter(name=topic).first() if TOPIC_NAME_RE.match(topic) else None
    if row is None and (not TOPIC_NAME_RE.match(topic) or registry.get(topic) is None):
        raise ApiError(404, "not_found", f"No topic {topic!r}.")
    status = Job.objects.queue_status(topic)
    holders = engine.safe_call(engine.TopicLock.holders, topic)
    return JsonResponse(
        {
            "topic": topic,
            "is_paused": row.is_paused if row else False,
            "concurrency": row.concurrency if row else 1,
            "by_status": status["by_status"],
            "by_priority": {str(priority): n for priority, n in status["by_priority"].items()},
            "redis": status["redis"],
            "holders": None if holders is None else [_holder(h) for h in holders],
            "flow": status["flow"],
        }
    )


def _holder(holder: Any) -> dict[str, Any]:
    return {"worker_id": holder.worker_id, "expires_at": holder.expires_at}


def health(request: HttpRequest) -> HttpResponse:
    """``GET /health``: can the database and Redis be reached, and which workers are alive.

    ``503`` when the database or Redis is down; ``"degraded"`` when no live worker.
    """
    report: dict[str, Any] = {}
    started = time.monotonic()
    try:
        with connections[router.db_for_read(Job)].cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 2)}
    except Exception as exc:  # any driver error means "down"
        report["database"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    started = time.monotonic()
    workers: list[dict[str, Any]] = []
    try:
        engine.get_redis().ping()
        report["redis"] = {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 2)}
        workers = engine.live_workers()
    except Exception as exc:  # redis errors, or a misconfigured connection
        report["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    live = [w for w in workers if not w.get("stale")]
    report["workers"] = {
        "live": len(live),
        "stale": len(workers) - len(live),
        "ids": [str(w.get("id", "")) for w in live],
    }
    up = report["database"]["ok"] and report["redis"]["ok"]
    report["status"] = ("ok" if live else "degraded") if up else "down"
    return JsonResponse(report, status=200 if up else 503)
