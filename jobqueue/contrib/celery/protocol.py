"""Celery task messages (protocol 2) read as job requests, or refused with a reason.

Nothing here talks to a broker or a database: :func:`parse` takes what a kombu
message carries (content type, headers, body bytes, priority) and returns a
:class:`JobRequest` or a :class:`Refusal`. The body is decoded only once its content
type says JSON, with :func:`json.loads`, never with a serializer that could run code.

A protocol 2 message names its task and id in the headers and carries
``[args, kwargs, embed]`` in its body; the job's payload is
``{"args": [...], "kwargs": {...}}``. Values kombu's JSON wraps in
``{"__type__": ..., "__value__": ...}`` (datetimes, dates, times, decimals, UUIDs,
bytes) arrive in the payload as plain strings: ISO 8601 for dates and times, the
decimal's text, the UUID's canonical form, the bytes' UTF-8 text (base64 text when
they were not UTF-8).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

from jobqueue.constants import MAX_PRIORITY

#: Why a message is refused; each reason has its counter.
REASONS = {
    "content-type": "its content type is not application/json (pickle, YAML, msgpack...), or its encoding not UTF-8",
    "malformed": "the body or a header is not what Celery's task protocol 2 sends",
    "protocol-1": "a Celery task protocol 1 message (set task_protocol = 2 on the sender)",
    "no-task": "no 'task' header",
    "no-id": "no 'id' header",
    "unmapped": "its task is mapped to no topic",
    "canvas": "it has callbacks, errbacks, a chain or a chord, which a job cannot carry",
    "expired": "its 'expires' time has passed, or comes before its 'eta'",
    "invalid": "jobqueue refused the job (payload too large or too deep, unknown topic...)",
    "id-conflict": "its task id already names a job of another topic",
}

#: Content types the bridge decodes (kombu's ``accept=["json"]``).
JSON_CONTENT_TYPE = "application/json"
_ENCODINGS = {None, "", "utf-8", "utf8"}

#: Turns a task id that is not a UUID into the job's UUID (``uuid5`` of this namespace).
TASK_ID_NAMESPACE = uuid.UUID("6b1f0a52-3c39-4f2e-9d54-0c6c1ce1e1a7")

#: The priorities of Celery's Redis transport: 0 (taken first) to 9.
REDIS_PRIORITY_RANGE = (0, 9)


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What a message asks for: a job of ``topic`` with this payload, id and timing."""

    task_id: str
    task: str
    topic: str
    job_id: uuid.UUID
    payload: dict[str, Any]
    priority: int | None
    run_after: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A message that is not turned into a job: one of :data:`REASONS`, and details."""

    reason: str
    detail: str
    task_id: str | None = None
    task: str | None = None


class _Malformed(ValueError):
    pass


def job_id_for(task_id: str) -> uuid.UUID:
    """The job's primary key for a Celery task id: the id itself when it is a UUID (as
    Celery makes them), else a UUID derived from it, the same every time."""
    try:
        return uuid.UUID(task_id)
    except ValueError:
        return uuid.uuid5(TASK_ID_NAMESPACE, task_id)


def job_priority(priority: Any, transport: str) -> int | None:
    """jobqueue's priority (higher runs first) for a message's priority.

    RabbitMQ takes higher priorities first, like jobqueue: 0..255 map to themselves
    (at most 100). Celery's Redis transport takes 0 first and 9 last: they map to
    0..-9. No priority (or not a number) leaves the topic's default.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        return None
    if transport == "redis":
        low, high = REDIS_PRIORITY_RANGE
        return -min(max(priority, low), high)
    return min(max(priority, 0), MAX_PRIORITY)


def _unwrap(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: kombu's typed values become JSON strings."""
    if obj.keys() != {"__type__", "__value__"}:
        return obj
    kind, value = obj["__type__"], obj["__value__"]
    if kind == "uuid" and isinstance(value, dict) and isinstance(value.get("hex"), str):
        return str(uuid.UUID(hex=value["hex"]))
    if kind in ("datetime", "date", "time", "decimal", "bytes", "base64") and isinstance(value, str):
        return value
    raise _Malformed(f"a value of unsupported type {kind!r}")


def _timestamp(value: Any, name: str) -> dt.datetime | None:
    """An ``eta``/``expires`` header (ISO 8601; naive means UTC, as Celery's default)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"header {name!r} is {value!r}, not an ISO 8601 time")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Malformed(f"header {name!r} is {value!r}, not an ISO 8601 time") from None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when


def _decode(body: bytes | str) -> Any:
    try:
        text = bytes(body).decode("utf-8") if isinstance(body, (bytes, bytearray, memoryview)) else body
        return json.loads(text, object_hook=_unwrap)
    except _Malformed:
        raise
    except (ValueError, RecursionError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Malformed(f"the body is not JSON text: {exc}") from None


def parse(
    *,
    content_type: str | None,
    content_encoding: str | None,
    headers: Mapping[str, Any] | None,
    body: bytes | str,
    priority: Any,
    transport: str,
    tasks: Mapping[str, str],
    now: dt.datetime,
) -> JobRequest | Refusal:
    """Read one message; ``tasks`` maps Celery task names to topics, ``now`` is aware."""
    if content_type != JSON_CONTENT_TYPE or (content_encoding or "").lower() not in _ENCODINGS:
        return Refusal("content-type", f"content type {content_type!r}, encoding {content_encoding!r}")
    headers = headers if isinstance(headers, Mapping) else {}
    task, task_id = headers.get("task"), headers.get("id")
    shown_id = task_id if isinstance(task_id, str) else None
    shown_task = task if isinstance(task, str) else None
    try:
        decoded = _decode(body)
    except _Malformed as exc:
        return Refusal("malformed", str(exc), shown_id, shown_task)
    if task is None and isinstance(decoded, dict) and "task" in decoded:
        old_id = decoded.get("id")
        return Refusal("protocol-1", "the task and id are in the body, not the headers",
                       old_id if isinstance(old_id, str) else None,
                       decoded["task"] if isinstance(decoded["task"], str) else None)
    if not isinstance(task, str) or not task:
        return Refusal("no-task", f"'task' header is {task!r}", shown_id)
    if not isinstance(task_id, str) or not task_id:
        return Refusal("no-id", f"'id' header is {task_id!r}", None, task)
    topic = tasks.get(task)
    if topic is None:
        return Refusal("unmapped", f"task {task!r} is mapped to no topic", task_id, task)
    try:
        args, kwargs, embed = _body_parts(decoded)
        run_after = _timestamp(headers.get("eta"), "eta")
        expires = _timestamp(headers.get("expires"), "expires")
    except _Malformed as exc:
        return Refusal("malformed", str(exc), task_id, task)
    if any(embed.get(key) for key in ("callbacks", "errbacks", "chain", "chord")):
        return Refusal("canvas", "callbacks, errbacks, a chain or a chord", task_id, task)
    if expires is not None and (expires <= now or (run_after is not None and run_after >= expires)):
        return Refusal("expired", f"expires {expires.isoformat()}", task_id, task)
    return JobRequest(
        task_id=task_id,
        task=task,
        topic=topic,
        job_id=job_id_for(task_id),
        payload={"args": args, "kwargs": kwargs},
        priority=job_priority(priority, transport),
        run_after=run_after,
    )


def _body_parts(decoded: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``[args, kwargs, embed]`` of a protocol 2 body (``embed`` may be missing or null)."""
    if not isinstance(decoded, list) or len(decoded) not in (2, 3):
        raise _Malformed("the body is not [args, kwargs, embed]")
    args, kwargs = decoded[0], decoded[1]
    embed = decoded[2] if len(decoded) == 3 and decoded[2] is not None else {}
    if not isinstance(args, list):
        raise _Malformed(f"args are {type(args).__name__}, not a list")
    if not isinstance(kwargs, dict):
        raise _Malformed(f"kwargs are {type(kwargs).__name__}, not an object")
    if not isinstance(embed, dict):
        raise _Malformed(f"the body's third part is {type(embed).__name__}, not an object")
    return args, kwargs, embed
