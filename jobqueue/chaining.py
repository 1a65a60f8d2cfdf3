"""Chaining: a succeeded job's ``Next(...)`` (or its topic's ``next_topic``) becomes a new job.

The receiver runs inside the transaction that records the success, so a
finished job never lacks its successor, and a retried acknowledgement (which
finds the job already succeeded) never creates two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Next:
    """Return ``Next("topic", data, priority=..., ...)`` from a handler to chain a job."""

    topic: str
    data: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    def __init__(self, topic: str, data: Any = None, **enqueue_kwargs: Any):
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "options", enqueue_kwargs)


def next_jobs(result: Any) -> list[Next]:
    """The ``Next`` items a handler's return value asks for (none for a plain result)."""
    if isinstance(result, Next):
        return [result]
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, Next) for r in result):
        return list(result)
    if isinstance(result, dict) and set(result) <= {"next_topic", "data"} and "next_topic" in result:
        return [Next(result["next_topic"], result.get("data"))]
    return []


def storable_result(result: Any) -> Any:
    """What is stored as ``Job.result`` for a handler's return value."""
    items = next_jobs(result)
    if items and not isinstance(result, dict):
        return {"next": [{"topic": n.topic, "data": n.data} for n in items]}
    return result


def to_wire(result: Any) -> Any:
    """Encode a handler's return value as JSON data (a child process sends it to its worker)."""
    items = next_jobs(result)
    if items and not isinstance(result, dict):
        return {"__next__": [{"topic": n.topic, "data": n.data, "options": n.options} for n in items]}
    return result


def from_wire(data: Any) -> Any:
    """Inverse of :func:`to_wire`."""
    if isinstance(data, dict) and set(data) == {"__next__"}:
        return [Next(n["topic"], n.get("data"), **(n.get("options") or {})) for n in data["__next__"]]
    return data


def on_job_succeeded(sender: Any, job: Any, result: Any = None, **kwargs: Any) -> None:
    from .models import Job

    items = next_jobs(result)
    if not items and job.topic.next_topic:
        data = result if result is not None else job.payload
        items = [Next(job.topic.next_topic, data)]
    for item in items:
        Job.objects.enqueue(item.topic, item.data, parent=job, **item.options)


def connect_chaining() -> None:
    from .signals import CHAINING_UID, job_succeeded

    job_succeeded.connect(on_job_succeeded, dispatch_uid=CHAINING_UID)
