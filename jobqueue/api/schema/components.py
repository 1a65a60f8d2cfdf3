"""The reusable parts of the API's OpenAPI document: schemas, responses, and the
small helpers that build them (:mod:`.paths` puts them together per operation).

Every bound comes from where it is enforced: :mod:`jobqueue.constants`,
:mod:`jobqueue.validation` and :mod:`jobqueue.api.serializers`.
"""

from __future__ import annotations

from typing import Any

from ...constants import (
    ENTITY_ID_COLUMN_LENGTH,
    MAX_INT,
    MAX_PRIORITY,
    MAX_PROGRESS,
    MIN_PRIORITY,
    MIN_PROGRESS,
    PROGRESS_MESSAGE_MAX_LENGTH,
    STAGE_MAX_LENGTH,
    TOPIC_NAME_MAX_LENGTH,
)
from ...models import ExecutionOutcome, JobStatus
from ...validation import TOPIC_NAME_PATTERN
from ..serializers import JOB_KEYS, MAX_DELAY, MAX_REASON_LENGTH

#: The topic name's pattern (:data:`jobqueue.validation.TOPIC_NAME_PATTERN`).
TOPIC_PATTERN = TOPIC_NAME_PATTERN
TOPIC = {"type": "string", "pattern": TOPIC_PATTERN, "maxLength": TOPIC_NAME_MAX_LENGTH}


def ref(name: str) -> dict[str, str]:
    """A reference to the schema ``name`` of the components."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response (or request body) of JSON that ``schema`` describes."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_ref(description: str) -> dict[str, Any]:
    """A reference to the response ``description`` of the components (an error)."""
    return {"$ref": f"#/components/responses/{description}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null."""
    return {**schema, "nullable": True}


#: Text a database can store: no NUL character.
TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
#: An entity id: no control characters (C0, DEL, C1) nor line or paragraph separators.
ENTITY_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": ENTITY_ID_COLUMN_LENGTH,
    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$",
}
TIME = {"type": "string", "format": "date-time"}
PRIORITY = {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY}
UUID = {"type": "string", "format": "uuid"}
COUNTS = {
    "type": "object",
    "description": "Jobs by status: the jobs in that status now (the finished statuses, succeeded, failed "
    "and cancelled, read from the metrics tally, which a requeue or a delete updates in the same transaction).",
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
        "required": list(JOB_KEYS),
        "properties": {
            "id": UUID,
            "topic": {"type": "string"},
            "status": {"type": "string", "enum": list(JobStatus.values)},
            "priority": PRIORITY,
            "payload": {"description": "Any JSON value."},
            "result": {"description": "Any JSON value; null until the job succeeds."},
            "error": {"type": "string"},
            "progress": {"type": "integer", "minimum": MIN_PROGRESS, "maximum": MAX_PROGRESS},
            "progress_message": {"type": "string"},
            "stage": {"type": "string"},
            "entity_id": nullable({"type": "string"}),
            "attempts": {"type": "integer", "minimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1},
            "timeout": {"type": "integer", "minimum": 1},
            "worker_id": {"type": "string"},
            "parent": nullable(UUID),
            "run_after": nullable(TIME),
            "created_at": TIME,
            "updated_at": TIME,
            "queued_at": nullable(TIME),
            "started_at": nullable(TIME),
            "finished_at": nullable(TIME),
        },
    },
    "Execution": {
        "type": "object",
        "required": ["attempt", "worker_id", "outcome", "started_at", "finished_at", "error", "traceback"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "worker_id": {"type": "string"},
            "hostname": {"type": "string"},
            "pid": nullable({"type": "integer"}),
            "outcome": {"type": "string", "enum": list(ExecutionOutcome.values)},
            "exit_code": nullable({"type": "integer"}),
            "error": {"type": "string"},
            "traceback": {"type": "string"},
            "duration": nullable({"type": "number"}),
            "started_at": TIME,
            "finished_at": nullable(TIME),
        },
    },
    "JobDetail": {
        "allOf": [
            ref("Job"),
            {
                "type": "object",
                "required": ["depends_on", "position_in_queue", "executions"],
                "properties": {
                    "depends_on": {"type": "array", "items": UUID},
                    "position_in_queue": nullable({"type": "integer", "minimum": 0}),
                    "executions": {"type": "array", "items": ref("Execution")},
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
            "next": nullable({"type": "string"}),
            "previous": nullable({"type": "string"}),
            "results": {"type": "array", "items": ref("Job")},
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
            "priority": PRIORITY,
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
            "progress": {"type": "number", "minimum": MIN_PROGRESS, "maximum": MAX_PROGRESS},
            "message": {**TEXT, "maxLength": PROGRESS_MESSAGE_MAX_LENGTH},
            "stage": {**TEXT, "maxLength": STAGE_MAX_LENGTH},
        },
    },
    "Cancel": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {**TEXT, "maxLength": MAX_REASON_LENGTH}},
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
            "rate": {"type": "string", "description": "Starts allowed, e.g. 100/m or 100/m:10 (a burst); empty: none."},
            "key_concurrency": nullable({"type": "integer", "minimum": 1}),
            "by_status": COUNTS,
        },
    },
    "Stats": {
        "type": "object",
        "required": ["topics", "totals"],
        "properties": {"topics": {"type": "array", "items": ref("TopicCounts")}, "totals": COUNTS},
    },
    "TopicStats": {
        "allOf": [
            ref("TopicCounts"),
            {
                "type": "object",
                "required": ["by_priority", "redis", "holders"],
                "properties": {
                    "by_priority": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "redis": nullable(
                        {
                            "type": "object",
                            "description": "Sizes of the topic's Redis structures; null while Redis is down.",
                            "properties": {k: {"type": "integer"} for k in ("queued", "leased", "scheduled")},
                        }
                    ),
                    "flow": nullable(
                        {
                            "type": "object",
                            "description": "Flow limits and how full they are now; null while Redis is down.",
                            "properties": {
                                "rate": nullable({
                                    "type": "object",
                                    "properties": {"count": {"type": "integer"}, "period": {"type": "number"},
                                                   "burst": {"type": "integer"}},
                                }),
                                "tokens": {"type": "integer", "description": "Starts allowed right now."},
                                "next_token_ms": {"type": "integer"},
                                "key_concurrency": nullable({"type": "integer"}),
                                "fair": {"type": "boolean"},
                                "keys_waiting": {"type": "integer"},
                                "keys": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {"key": {"type": "string"}, "queued": {"type": "integer"},
                                                       "running": {"type": "integer"}},
                                    },
                                },
                            },
                        }
                    ),
                    "holders": nullable(
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["worker_id"],
                                "properties": {
                                    "worker_id": {"type": "string"},
                                    "expires_at": nullable({"type": "number"}),
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
            "database": ref("Check"),
            "redis": ref("Check"),
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
    "BadRequest": json_body(ref("Error"), "Bad JSON or invalid input (codes bad_json, invalid, unknown_topic)."),
    "Unauthorized": {
        **json_body(ref("Error"), "No valid session or bearer token (not_authenticated, invalid_token)."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "Forbidden": json_body(
        ref("Error"), "Missing permission, or a failed CSRF check (permission_denied, csrf_failed)."
    ),
    "NotFound": json_body(ref("Error"), "No such job or topic (not_found)."),
    "Conflict": json_body(
        ref("Error"),
        "Not allowed in the job's state, or a duplicate entity (invalid_transition, duplicate_job).",
    ),
    "TooLarge": json_body(
        ref("Error"), "The body or the payload is over MAX_PAYLOAD_BYTES (payload_too_large)."
    ),
}


def components() -> dict[str, Any]:
    """The document's ``components``."""
    return {
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
    }
