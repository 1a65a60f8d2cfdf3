"""The API's OpenAPI 3 document, written by hand to match :mod:`jobqueue.api.views`.

``tests/test_api_schema.py`` fuzzes every operation against it, so a view and
its description cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from .. import __version__
from ..models import ExecutionOutcome, JobStatus
from ..validation import MAX_PRIORITY, MIN_PRIORITY
from .serializers import MAX_DELAY, MAX_INT

#: validation.TOPIC_NAME_RE without two dots in a row (validate_topic_name refuses ".."),
#: written without a lookahead so that schema-driven generators can use it.
TOPIC_PATTERN = r"^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*\.?$"
TOPIC = {"type": "string", "pattern": TOPIC_PATTERN, "maxLength": 100}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/{description}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


#: Text a database can store: no NUL character.
TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
#: An entity id: no control characters (C0, DEL, C1) nor line or paragraph separators.
ENTITY_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$",
}
TIME = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
COUNTS = {
    "type": "object",
    "properties": {status: {"type": "integer", "minimum": 0} for status in JobStatus.values},
    "required": list(JobStatus.values),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "Job": {
        "type": "object",
        "required": [
            "id",
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
            "parent",
            "run_after",
            "created_at",
            "updated_at",
            "queued_at",
            "started_at",
            "finished_at",
        ],
        "properties": {
            "id": UUID,
            "topic": {"type": "string"},
            "status": {"type": "string", "enum": list(JobStatus.values)},
            "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
            "payload": {"description": "Any JSON value."},
            "result": {"description": "Any JSON value; null until the job succeeds."},
            "error": {"type": "string"},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "progress_message": {"type": "string"},
            "stage": {"type": "string"},
            "entity_id": _nullable({"type": "string"}),
            "attempts": {"type": "integer", "minimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1},
            "timeout": {"type": "integer", "minimum": 1},
            "worker_id": {"type": "string"},
            "parent": _nullable(UUID),
            "run_after": _nullable(TIME),
            "created_at": TIME,
            "updated_at": TIME,
            "queued_at": _nullable(TIME),
            "started_at": _nullable(TIME),
            "finished_at": _nullable(TIME),
        },
    },
    "Execution": {
        "type": "object",
        "required": ["attempt", "worker_id", "outcome", "started_at", "finished_at", "error", "traceback"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "worker_id": {"type": "string"},
            "hostname": {"type": "string"},
            "pid": _nullable({"type": "integer"}),
            "outcome": {"type": "string", "enum": list(ExecutionOutcome.values)},
            "exit_code": _nullable({"type": "integer"}),
            "error": {"type": "string"},
            "traceback": {"type": "string"},
            "duration": _nullable({"type": "number"}),
            "started_at": TIME,
            "finished_at": _nullable(TIME),
        },
    },
    "JobDetail": {
        "allOf": [
            _ref("Job"),
            {
                "type": "object",
                "required": ["depends_on", "position_in_queue", "executions"],
                "properties": {
                    "depends_on": {"type": "array", "items": UUID},
                    "position_in_queue": _nullable({"type": "integer", "minimum": 0}),
                    "executions": {"type": "array", "items": _ref("Execution")},
                },
            },
        ]
    },
    "JobList": {
        "type": "object",
        "required": ["count", "page", "page_size", "num_pages", "next", "previous", "results"],
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "page": {"type": "integer", "minimum": 1},
            "page_size": {"type": "integer", "minimum": 1},
            "num_pages": {"type": "integer", "minimum": 1},
            "next": _nullable({"type": "string"}),
            "previous": _nullable({"type": "string"}),
            "results": {"type": "array", "items": _ref("Job")},
        },
    },
    "JobCreate": {
        "type": "object",
        "required": ["topic"],
        "additionalProperties": False,
        "properties": {
            "topic": TOPIC,
            "payload": {
                "description": "Any JSON value (default {}); its JSON is limited by MAX_PAYLOAD_BYTES."
            },
            "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
            "entity_id": ENTITY_ID,
            "run_after": TIME,
            "delay": {"type": "number", "minimum": 0, "maximum": MAX_DELAY},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "timeout": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            "depends_on": {"type": "array", "items": UUID},
            "parent": UUID,
        },
    },
    "Progress": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            "progress": {"type": "number", "minimum": 0, "maximum": 100},
            "message": {**TEXT, "maxLength": 255},
            "stage": {**TEXT, "maxLength": 100},
        },
    },
    "Cancel": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {**TEXT, "maxLength": 1000}},
    },
    "Requeue": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reset_attempts": {"type": "boolean", "default": True}},
    },
    "TopicCounts": {
        "type": "object",
        "required": ["topic", "is_paused", "concurrency", "by_status"],
        "properties": {
            "topic": {"type": "string"},
            "is_paused": {"type": "boolean"},
            "concurrency": {"type": "integer", "minimum": 1},
            "by_status": COUNTS,
        },
    },
    "Stats": {
        "type": "object",
        "required": ["topics", "totals"],
        "properties": {"topics": {"type": "array", "items": _ref("TopicCounts")}, "totals": COUNTS},
    },
    "TopicStats": {
        "allOf": [
            _ref("TopicCounts"),
            {
                "type": "object",
                "required": ["by_priority", "redis", "holders"],
                "properties": {
                    "by_priority": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "redis": _nullable(
                        {
                            "type": "object",
                            "description": "Sizes of the topic's Redis structures; null while Redis is down.",
                            "properties": {k: {"type": "integer"} for k in ("queued", "leased", "scheduled")},
                        }
                    ),
                    "holders": _nullable(
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["worker_id"],
                                "properties": {
                                    "worker_id": {"type": "string"},
                                    "expires_at": _nullable({"type": "number"}),
                                },
                            },
                        }
                    ),
                },
            },
        ]
    },
    "Health": {
        "type": "object",
        "required": ["status", "database", "redis", "workers"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "down"]},
            "database": _ref("Check"),
            "redis": _ref("Check"),
            "workers": {
                "type": "object",
                "required": ["live", "stale", "ids"],
                "properties": {
                    "live": {"type": "integer", "minimum": 0},
                    "stale": {"type": "integer", "minimum": 0},
                    "ids": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "Check": {
        "type": "object",
        "required": ["ok"],
        "properties": {
            "ok": {"type": "boolean"},
            "latency_ms": {"type": "number"},
            "error": {"type": "string"},
        },
    },
}

RESPONSES = {
    "BadRequest": _json(_ref("Error"), "Bad JSON or invalid input (codes bad_json, invalid, unknown_topic)."),
    "Unauthorized": {
        **_json(_ref("Error"), "No valid session or bearer token (not_authenticated, invalid_token)."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": _json(
        _ref("Error"), "Missing permission, or a failed CSRF check (permission_denied, csrf_failed)."
    ),
    "NotFound": _json(_ref("Error"), "No such job or topic (not_found)."),
    "Conflict": _json(
        _ref("Error"),
        "Not allowed in the job's state, or a duplicate entity (invalid_transition, duplicate_job).",
    ),
    "TooLarge": _json(
        _ref("Error"), "The body or the payload is over MAX_PAYLOAD_BYTES (payload_too_large)."
    ),
}

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
    return {codes[name]: _error(name) for name in names}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


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


def build_schema(base_path: str) -> dict[str, Any]:
    """The document, with ``base_path`` (where the API is included) as its server URL."""
    job = _json(_ref("Job"), "The job.")
    return {
        "openapi": "3.0.3",
        "info": {"title": "jobqueue API", "version": __version__},
        "servers": [{"url": base_path.rstrip("/") or "/"}],
        "security": [{"bearerAuth": []}, {"sessionAuth": []}],
        "paths": {
            "/jobs/": {
                "get": {
                    "summary": "List jobs, newest first",
                    "description": "Needs `jobqueue.view_job`. A page past the last is empty.",
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
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10**9},
                        },
                        {
                            "name": "page_size",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("JobList"), "A page of jobs."),
                        **_errors("BadRequest", "Unauthorized", "Forbidden"),
                    },
                },
                "post": {
                    "summary": "Create a job",
                    "description": "Needs `jobqueue.add_job` (and `jobqueue.enqueue_shell_job` for the "
                    "shell topic, or a topic whose next_topic chain leads into it). With an entity_id "
                    "that already has a pending job, that job is "
                    "returned with 200 (its priority raised only with `jobqueue.change_priority_job`); "
                    "without `jobqueue.view_job`, 409 duplicate_job with only its id.",
                    "requestBody": _body("JobCreate"),
                    "responses": {
                        "201": {**job, "headers": {"Location": {"schema": {"type": "string"}}}},
                        "200": _json(_ref("Job"), "The pending job of the same entity."),
                        **_errors("BadRequest", "Unauthorized", "Forbidden", "Conflict", "TooLarge"),
                    },
                },
            },
            "/jobs/{job_id}": {
                "get": {
                    "summary": "A job with its dependencies and attempts",
                    "description": "Needs `jobqueue.view_job`.",
                    "parameters": [JOB_ID],
                    "responses": {
                        "200": _json(_ref("JobDetail"), "The job."),
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
                    "200": _json(_ref("Job"), "Cancelled."),
                    "202": _json(_ref("Job"), "Running: asked to stop."),
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
                    "description": "Needs `jobqueue.view_job`.",
                    "responses": {
                        "200": _json(_ref("Stats"), "Counts."),
                        **_errors("Unauthorized", "Forbidden"),
                    },
                }
            },
            "/stats/{topic}": {
                "get": {
                    "summary": "One topic's counts, Redis depths and slot holders",
                    "description": "Needs `jobqueue.view_job`.",
                    "parameters": [
                        {
                            "name": "topic",
                            "in": "path",
                            "required": True,
                            "schema": TOPIC,
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("TopicStats"), "The topic."),
                        **_errors("Unauthorized", "Forbidden", "NotFound"),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Database, Redis and live workers",
                    "description": "Needs `jobqueue.view_job`. 503 when the database or Redis is down.",
                    "responses": {
                        "200": _json(_ref("Health"), "Up (status ok, or degraded without live workers)."),
                        "503": _json(_ref("Health"), "Down."),
                        **_errors("Unauthorized", "Forbidden"),
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from the admin.",
                },
                "sessionAuth": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "sessionid",
                    "description": "A logged-in session; unsafe methods also need X-CSRFToken.",
                },
            },
        },
    }


def schema_view(request: HttpRequest) -> HttpResponse:
    """The document itself, readable without logging in (it holds no data)."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": {"code": "method_not_allowed", "message": "Use GET."}}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    base = reverse("jobqueue_api:stats")[: -len("stats")]
    return JsonResponse(build_schema(base))
