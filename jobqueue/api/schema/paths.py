"""The operations of the API's OpenAPI document, one entry per route of
:mod:`jobqueue.api.urls`, built from the parts in :mod:`.components`."""

from __future__ import annotations

from typing import Any

from ...constants import SHELL_PERMISSION, SHELL_TOPIC
from ...models import JobStatus
from ...permissions import CHANGE_PRIORITY, VIEW_JOB
from ..serializers import MAX_PAGE, MAX_PAGE_SIZE
from .components import ENTITY_ID, TOPIC, UUID, error_ref, json_body, ref

JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {**UUID, "minLength": 1}}


def _errors(*names: str) -> dict[str, Any]:
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
    }
    return {codes[name]: error_ref(name) for name in names}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": ref(name)}}}


def _job_action(
    summary: str, body: str, required: bool, permission: str, ok: dict[str, Any]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": f"Needs the `{permission}` permission.",
            "parameters": [JOB_ID],
            "requestBody": _body(body, required),
            "responses": {
                **ok,
                **_errors("BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "TooLarge"),
            },
        }
    }


def paths() -> dict[str, Any]:
    """The document's ``paths``: every operation with its parameters and responses."""
    job = json_body(ref("Job"), "The job.")
    return {
        "/jobs/": {
            "get": {
                "summary": "List jobs, newest first",
                "description": f"Needs `{VIEW_JOB}`. A page past the last is empty.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(JobStatus.values)},
                    },
                    {
                        "name": "topic",
                        "in": "query",
                        "schema": TOPIC,
                    },
                    {"name": "entity_id", "in": "query", "schema": ENTITY_ID},
                    {
                        "name": "page",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                    },
                    {
                        "name": "page_size",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                    },
                ],
                "responses": {
                    "200": json_body(ref("JobList"), "A page of jobs."),
                    **_errors("BadRequest", "Unauthorized", "Forbidden"),
                },
            },
            "post": {
                "summary": "Create a job",
                "description": f"Needs `jobqueue.add_job` (and `{SHELL_PERMISSION}` for the "
                f"{SHELL_TOPIC} topic, or a topic whose next_topic chain leads into it). With an entity_id "
                "that already has a pending job, that job is "
                f"returned with 200 (its priority raised only with `{CHANGE_PRIORITY}`); "
                f"without `{VIEW_JOB}`, 409 duplicate_job with only its id.",
                "requestBody": _body("JobCreate"),
                "responses": {
                    "201": {**job, "headers": {"Location": {"schema": {"type": "string"}}}},
                    "200": json_body(ref("Job"), "The pending job of the same entity."),
                    **_errors("BadRequest", "Unauthorized", "Forbidden", "Conflict", "TooLarge"),
                },
            },
        },
        "/jobs/{job_id}": {
            "get": {
                "summary": "A job with its dependencies and attempts",
                "description": f"Needs `{VIEW_JOB}`.",
                "parameters": [JOB_ID],
                "responses": {
                    "200": json_body(ref("JobDetail"), "The job."),
                    **_errors("Unauthorized", "Forbidden", "NotFound"),
                },
            },
            "delete": {
                "summary": "Delete a finished job",
                "description": "Needs `jobqueue.delete_job`; only a succeeded, failed or cancelled job.",
                "parameters": [JOB_ID],
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors("Unauthorized", "Forbidden", "NotFound", "Conflict"),
                },
            },
        },
        "/jobs/{job_id}/progress": _job_action(
            "Report a running job's progress", "Progress", True, "jobqueue.change_job", {"200": job}
        ),
        "/jobs/{job_id}/cancel": _job_action(
            "Cancel a pending job, or ask a running one to stop",
            "Cancel",
            False,
            "jobqueue.cancel_job",
            {
                "200": json_body(ref("Job"), "Cancelled."),
                "202": json_body(ref("Job"), "Running: asked to stop."),
            },
        ),
        "/jobs/{job_id}/requeue": _job_action(
            "Queue a failed or cancelled job again",
            "Requeue",
            False,
            "jobqueue.requeue_job",
            {"200": job},
        ),
        "/stats": {
            "get": {
                "summary": "Job counts by topic and status",
                "description": f"Needs `{VIEW_JOB}`.",
                "responses": {
                    "200": json_body(ref("Stats"), "Counts."),
                    **_errors("Unauthorized", "Forbidden"),
                },
            }
        },
        "/stats/{topic}": {
            "get": {
                "summary": "One topic's counts, Redis depths and slot holders",
                "description": f"Needs `{VIEW_JOB}`.",
                "parameters": [
                    {
                        "name": "topic",
                        "in": "path",
                        "required": True,
                        "schema": TOPIC,
                    }
                ],
                "responses": {
                    "200": json_body(ref("TopicStats"), "The topic."),
                    **_errors("Unauthorized", "Forbidden", "NotFound"),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Database, Redis and live workers",
                "description": f"Needs `{VIEW_JOB}`. 503 when the database or Redis is down.",
                "responses": {
                    "200": json_body(ref("Health"), "Up (status ok, or degraded without live workers)."),
                    "503": json_body(ref("Health"), "Down."),
                    **_errors("Unauthorized", "Forbidden"),
                },
            }
        },
    }
