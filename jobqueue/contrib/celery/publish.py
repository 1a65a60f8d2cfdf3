"""Handing a task to a Celery fleet: a Celery protocol 2 message, published with kombu.

The message is the one Celery's own ``apply_async()`` sends (``celery/app/amqp.py``,
``as_task_v2``): the headers ``lang``, ``task``, ``id``, ``root_id``, ``parent_id``,
``group``, ``eta``, ``expires``, ``retries``, ``timelimit``, ``argsrepr``,
``kwargsrepr`` and ``origin``; the JSON body ``[args, kwargs, embed]``; the
properties ``correlation_id`` (the task id) and ``reply_to``. Like Celery, it goes to
the default exchange with the queue's name as routing key, after declaring the queue
as Celery would create it (a direct exchange of the same name), so a stock
``celery worker -Q <queue>`` consumes it on RabbitMQ and on Redis alike; kombu adds
what each transport needs (Redis's priority lists and ``delivery_info``).

kombu is imported on first use: ``@shared_task`` call sites need no broker library.
"""

from __future__ import annotations

import os
import reprlib
import socket
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from ...conf import settings
from .exceptions import NotSupported, PublishError

#: The queue Celery workers consume by default.
DEFAULT_QUEUE = "celery"
#: How many times kombu reconnects and retries one publish before the attempt fails.
PUBLISH_RETRIES = 2
#: Seconds to wait for a broker connection before giving up on an attempt.
CONNECT_TIMEOUT = 5.0
#: The longest ``argsrepr`` / ``kwargsrepr`` header, in characters (Celery's default).
REPR_MAX_LENGTH = 1024

_repr = reprlib.Repr()
_repr.maxstring = 100
_repr.maxother = 100


def broker_url() -> str:
    """``JOBQUEUE["CELERY_BROKER_URL"]``, else Django's ``CELERY_BROKER_URL``."""
    url = settings.CELERY_BROKER_URL or getattr(django_settings, "CELERY_BROKER_URL", None)
    if not url:
        raise ImproperlyConfigured(
            "Handing a task to Celery needs a broker: set JOBQUEUE['CELERY_BROKER_URL'] "
            "(or CELERY_BROKER_URL), e.g. 'amqp://guest:guest@localhost:5672//' or 'redis://localhost:6379/0'."
        )
    return str(url)


def _short_repr(value: Any) -> str:
    return _repr.repr(value)[:REPR_MAX_LENGTH]


def task_message(
    task_id: str,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    eta: str | None = None,
    expires: str | None = None,
    parent_id: str | None = None,
    root_id: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """The headers, properties and body of a Celery protocol 2 task message."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": eta,
        "expires": expires,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": _short_repr(tuple(args)),
        "kwargsrepr": _short_repr(kwargs),
        "origin": f"gen{os.getpid()}@{socket.gethostname()}",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {"correlation_id": task_id, "reply_to": ""}
    body = [list(args), dict(kwargs), {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return headers, properties, body


def publish(
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    task_id: str,
    queue: str | None = None,
    eta: str | None = None,
    expires: str | None = None,
    priority: int | None = None,
    parent_id: str | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Publish one task message; returns what the sending job records as its result.

    Raises :class:`PublishError` (naming the task, its id and the broker, without the
    password) when the broker cannot be reached or refuses the message.
    """
    try:
        from kombu import Connection, Exchange, Queue, pools
    except ImportError:  # pragma: no cover - kombu comes with the [celery] extra
        raise NotSupported("Handing tasks to Celery needs kombu: pip install 'django-jobqueue[celery]'.") from None

    url = url or broker_url()
    queue = queue or DEFAULT_QUEUE
    headers, properties, body = task_message(task_id, name, args, kwargs, eta=eta, expires=expires, parent_id=parent_id)
    declared = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    connection = Connection(url, connect_timeout=CONNECT_TIMEOUT)
    extra = {} if priority is None else {"priority": priority}
    try:
        with pools.producers[connection].acquire(block=True, timeout=CONNECT_TIMEOUT) as producer:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                declare=[declared],
                serializer="json",
                headers=headers,
                delivery_mode=2,
                retry=True,
                retry_policy={
                    "max_retries": PUBLISH_RETRIES,
                    "interval_start": 0,
                    "interval_step": 0.5,
                    "interval_max": 1.0,
                },
                **properties,
                **extra,
            )
    except Exception as exc:  # kombu and its transports raise many kinds (socket, amqp, redis)
        raise PublishError(
            f"Could not hand Celery task {name!r} (task id {task_id}) to the broker at "
            f"{connection.as_uri()}: {type(exc).__name__}: {exc}"
        ) from exc
    return {"celery_task_id": task_id, "task": name, "queue": queue, "broker": connection.as_uri()}
