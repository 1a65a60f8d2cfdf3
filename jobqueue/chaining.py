"""Chaining: a succeeded job's ``Next(...)`` (or its topic's ``next_topic``) becomes a new job.

This module is the data side: what a handler's return value asks for and how it
is stored and sent between processes. The successors are created by the
``succeed`` transition (:func:`jobqueue.transitions.followups.chain`), inside the
transaction that records the success, so a finished job never lacks its
successor, and a retried acknowledgement (which finds the job already
succeeded) never creates two.

A chain read from data (a result ``{"next_topic": ..., "data": ...}``, a script's
``output.json``) may come from whoever wrote the payload, so it never leads into a
topic that needs a permission to enqueue (:mod:`jobqueue.permissions`): that takes a
``Next`` returned by code, or a topic's ``next_topic``.
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
    #: Read from data rather than returned by code: never followed into a protected topic.
    from_data: bool = field(default=False, compare=False, repr=False)

    def __init__(self, topic: str, data: Any = None, **enqueue_kwargs: Any):
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "options", enqueue_kwargs)
        object.__setattr__(self, "from_data", False)

    @classmethod
    def read(cls, topic: str, data: Any = None, **enqueue_kwargs: Any) -> Next:
        """A chain read from data (a result's dict form, a script's ``output.json``)."""
        item = cls(topic, data, **enqueue_kwargs)
        object.__setattr__(item, "from_data", True)
        return item


def next_jobs(result: Any) -> list[Next]:
    """The ``Next`` items a handler's return value asks for (none for a plain result)."""
    if isinstance(result, Next):
        return [result]
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, Next) for r in result):
        return list(result)
    if isinstance(result, dict) and set(result) <= {"next_topic", "data"} and "next_topic" in result:
        return [Next.read(result["next_topic"], result.get("data"))]
    return []


def storable_result(result: Any) -> Any:
    """What is stored as ``Job.result`` for a handler's return value."""
    items = next_jobs(result)
    if items and not isinstance(result, dict):
        return {"next": [{"topic": n.topic, "data": n.data} for n in items]}
    return result


def to_wire(result: Any) -> Any:
    """Encode a handler's return value as JSON data (a child process sends it to its worker).

    A plain result is wrapped too, so no result can pass for a ``Next`` on the way.
    """
    items = next_jobs(result)
    if items and not isinstance(result, dict):
        return {"next": [{"topic": n.topic, "data": n.data, "options": n.options, "from_data": n.from_data}
                         for n in items]}
    return {"value": result}


def from_wire(data: Any) -> Any:
    """Inverse of :func:`to_wire`."""
    if "next" in data:
        return [
            (Next.read if n["from_data"] else Next)(n["topic"], n["data"], **n["options"]) for n in data["next"]
        ]
    return data["value"]
