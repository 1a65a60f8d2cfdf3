"""Steps that a Celery fleet runs: ``CeleryNext(...)`` and topics that forward to Celery.

A handler returns ``CeleryNext("app.tasks.resize", args=[...], kwargs={...})`` the way
it returns ``Next("topic", data)``; a topic registered with
``forward_to_celery("images.resize", task="app.tasks.resize")`` sends each of its
jobs (payload ``{"args": [...], "kwargs": {...}}``, the shape ``@shared_task`` jobs
have) to Celery, so ``Next("images.resize", ...)`` or a ``next_topic`` hands over too.

Why nothing is lost (the order of things). A ``CeleryNext`` is a ``Next`` into the
:data:`SEND_TOPIC` topic: the job that hands over succeeds and, in the same
transaction, creates a *sending job* whose payload holds the Celery task. That job's
handler publishes the message with kombu, in the worker that runs it, and only then
does its success commit:

- the Celery task id is the sending job's id, so a retried publish reuses it, and the
  sending job's result records it: ``{"celery_task_id": ..., "task": ..., "queue":
  ..., "broker": ...}`` (the broker without its password), in the admin and the API;
- a broker that is down fails the attempt with a :class:`~.exceptions.PublishError`
  naming the task, its id and the broker; the sending job is retried with backoff
  (:data:`SEND_MAX_ATTEMPTS` attempts, about eight minutes of outage) and, if it
  still fails, stays ``failed`` in the admin to be requeued. The handler that
  returned ``CeleryNext`` is not run again for it;
- a worker that dies between the publish and the commit runs the sending job again,
  which publishes the same task id again: delivery is at least once, as for every
  job, so a Celery task handed over this way should be safe to repeat (it can tell a
  repeat by ``self.request.id``).

Publishing inside the handing-over job's own success instead would run its handler
again whenever the broker is down, and lose its work when its attempts ran out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from ...chaining import Next
from ...registry import register
from ...validation import validate_topic_name
from .payload import iso_time, read_payload
from .publish import publish

#: The topic of sending jobs: each publishes one Celery task message.
SEND_TOPIC = "celery.send"
#: Attempts of a sending job (the topic's default; an operator may change it in the admin).
SEND_MAX_ATTEMPTS = 10
#: The base of a sending job's retry delay, in seconds (doubled per attempt).
SEND_RETRY_BACKOFF = 1.0
#: Seconds a publish may take before its attempt is failed.
SEND_TIMEOUT = 60


class CeleryNext(Next):
    """Return ``CeleryNext("app.tasks.resize", args=[...], kwargs={...})`` from a handler
    to have a Celery worker run that task next.

    ``queue`` is the Celery queue (default ``"celery"``); ``countdown`` (seconds) or
    ``eta`` (an aware datetime) set the message's ``eta``, counted from when the handler
    returns; ``expires`` (seconds or a datetime) its expiry; ``priority`` is the
    message's priority, which means what it means on the Celery side (0-9; higher
    first on RabbitMQ with ``x-max-priority``, lower first on Redis).
    """

    def __init__(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        expires: float | dt.datetime | None = None,
        priority: int | None = None,
    ):
        if not isinstance(task, str) or not task:
            raise ValueError(f"CeleryNext needs a Celery task name, not {task!r}.")
        if countdown is not None and eta is not None:
            raise ValueError("CeleryNext: give countdown or eta, not both.")
        if priority is not None and (
            not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255
        ):
            raise ValueError(f"CeleryNext: priority must be an integer 0-255 (Celery uses 0-9), not {priority!r}.")
        data = {
            "task": task,
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "queue": queue,
            "eta": iso_time(countdown if countdown is not None else eta, "eta"),
            "expires": iso_time(expires, "expires"),
            "priority": priority,
        }
        super().__init__(SEND_TOPIC, data)


def send_job(job: Any) -> dict[str, Any]:
    """The handler of :data:`SEND_TOPIC`: publish the task the payload describes."""
    data = job.payload
    args, kwargs = read_payload(data, what=f"A {SEND_TOPIC} job's payload")
    task = data.get("task")
    if not isinstance(task, str) or not task:
        raise ValueError(f"A {SEND_TOPIC} job's payload names no Celery task (its 'task' is {task!r}).")
    return publish(
        task,
        args,
        kwargs,
        task_id=str(job.pk),
        queue=data.get("queue"),
        eta=data.get("eta"),
        expires=data.get("expires"),
        priority=data.get("priority"),
        parent_id=str(job.parent_id) if job.parent_id else None,
    )


def register_send_topic() -> None:
    """Register the handler of :data:`SEND_TOPIC` (done when this module is imported)."""
    register(
        SEND_TOPIC,
        send_job,
        max_attempts=SEND_MAX_ATTEMPTS,
        retry_backoff=SEND_RETRY_BACKOFF,
        timeout=SEND_TIMEOUT,
        isolation="inline",
        concurrency=4,
        description="Hands tasks to a Celery fleet (CeleryNext).",
    )


def forward_to_celery(
    topic: str,
    task: str | None = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    **handler_options: Any,
) -> Callable[[Any], dict[str, Any]]:
    """Register ``topic`` as one whose jobs are published to Celery as ``task``.

    A job's payload is ``{"args": [...], "kwargs": {...}}``; its task id is the job's id,
    recorded in its result as for :class:`CeleryNext`. ``task`` defaults to the topic's
    name; ``queue`` and ``priority`` are the message's. Other options are the
    topic's, as for ``@handler`` (``max_attempts``, ``retry_backoff``...).
    """
    validate_topic_name(topic)
    name = task or topic

    def forward(job: Any) -> dict[str, Any]:
        args, kwargs = read_payload(job.payload, what=f"A job of topic {topic!r}")
        return publish(
            name,
            args,
            kwargs,
            task_id=str(job.pk),
            queue=queue,
            priority=priority,
            parent_id=str(job.parent_id) if job.parent_id else None,
        )

    forward.__qualname__ = f"forward_to_celery[{topic}]"
    options = {
        "max_attempts": SEND_MAX_ATTEMPTS,
        "retry_backoff": SEND_RETRY_BACKOFF,
        "timeout": SEND_TIMEOUT,
        "description": f"Forwards each job to the Celery task {name}.",
        **handler_options,
    }
    register(topic, forward, **options)
    return forward


register_send_topic()
