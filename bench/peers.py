"""The peers jobqueue is measured against, set up the way a Django project would.

Celery: an app configured from Django's settings (``CELERY_*``), Redis broker, results
ignored; run with ``celery -A bench.peers worker -P solo``. RQ: a queue on the same
Redis; ``bench/rqworker.py`` runs its workers with Django set up first, as
``django-rq``'s ``rqworker`` command does. Both run the same job body as jobqueue's
handlers (:func:`bench.common.run`), and both could use the ORM.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

import redis  # noqa: E402
from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from rq import Queue  # noqa: E402

from bench import common  # noqa: E402

#: The RQ queue and the Celery queue the benchmark uses (the bridge's workload names its own).
QUEUE_NAME = os.environ.get("JOBQUEUE_BENCH_CELERY_QUEUE", "bench")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = QUEUE_NAME


@app.task(name="bench.noop")
def celery_noop(**kwargs):
    """Celery's no-op task."""
    common.run(**kwargs)


def noop(**kwargs):
    """RQ's no-op function."""
    common.run(**kwargs)


def rq_connection() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def rq_queue(connection: redis.Redis | None = None) -> Queue:
    return Queue(QUEUE_NAME, connection=connection or rq_connection())


def declare_celery_queue() -> None:
    """Declare Celery's queue again after the Redis database was flushed (its bindings
    are Redis keys, and a producer declares a queue only once per process)."""
    with app.connection_for_write() as connection:
        app.amqp.queues[QUEUE_NAME](connection.default_channel).declare()
