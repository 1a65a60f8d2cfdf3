"""Celery compatibility: Celery-style call sites on jobqueue, and steps handed to a Celery fleet.

::

    from jobqueue.contrib.celery import shared_task      # was: from celery import shared_task

    @shared_task
    def resize(path, width):                             # topic "myapp.tasks.resize"
        ...

    resize.delay("a.png", 200)                           # a job, in your transaction
    (resize.s("a.png", 200) | publish.s()).delay()       # jobs chained with Next

    @handler("thumbnails")
    def thumbnails(job):
        return CeleryNext("legacy.tasks.upload", args=[job.payload["path"]])   # a Celery worker runs it

The modules: :mod:`.task` (``shared_task``), :mod:`.canvas` (signatures and chains),
:mod:`.result` (``JobResult``), :mod:`.outbound` (``CeleryNext``, ``forward_to_celery``
and the sending jobs: read its docstring for why nothing is lost), :mod:`.publish`
(the Celery protocol 2 message, sent with kombu), :mod:`.payload` and
:mod:`.exceptions`.

The bridge, ``manage.py jobbridge celery``, turns the messages a Celery application
sends (``delay()``, ``send_task()``) into jobs, read from its RabbitMQ or Redis broker
with kombu: add ``"jobqueue.contrib.celery"`` to ``INSTALLED_APPS`` for the command and
its checks. Its modules: :mod:`.protocol` (a message read as a job request, or refused),
:mod:`.bridge` (the consuming loop), :mod:`.checks` (``JOBQUEUE["CELERY_TASKS"]``).

Names are imported from those modules on first use: importing this package loads
neither kombu nor jobqueue's models, and registers the sending topic
(``celery.send``) only once ``CeleryNext`` or ``forward_to_celery`` is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_exports

if TYPE_CHECKING:
    from .canvas import Chain, Signature, chain, chord, group
    from .exceptions import JobFailed, NotSupported, PublishError
    from .outbound import SEND_TOPIC, CeleryNext, forward_to_celery
    from .payload import make_payload, read_payload
    from .result import AsyncResult, JobResult
    from .task import BoundTask, Task, autodiscover_tasks, shared_task

_MODULE_OF = {
    "Chain": "canvas",
    "Signature": "canvas",
    "chain": "canvas",
    "chord": "canvas",
    "group": "canvas",
    "JobFailed": "exceptions",
    "NotSupported": "exceptions",
    "PublishError": "exceptions",
    "SEND_TOPIC": "outbound",
    "CeleryNext": "outbound",
    "forward_to_celery": "outbound",
    "make_payload": "payload",
    "read_payload": "payload",
    "AsyncResult": "result",
    "JobResult": "result",
    "BoundTask": "task",
    "Task": "task",
    "autodiscover_tasks": "task",
    "shared_task": "task",
}


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)


__all__ = [
    "AsyncResult",
    "BoundTask",
    "CeleryNext",
    "Chain",
    "JobFailed",
    "JobResult",
    "NotSupported",
    "PublishError",
    "SEND_TOPIC",
    "Signature",
    "Task",
    "autodiscover_tasks",
    "chain",
    "chord",
    "forward_to_celery",
    "group",
    "make_payload",
    "read_payload",
    "shared_task",
]
