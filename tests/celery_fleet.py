"""A small stock Celery app: the fleet that jobqueue hands steps to in the tests.

Run by the tests as ``celery -A tests.celery_fleet worker -P solo -Q <queue>``, with the
broker in ``CELERY_FLEET_BROKER`` and the result backend in ``CELERY_FLEET_BACKEND``
(Redis). Its task records what it received in the result backend and in a Redis key,
so a test can check what Celery saw.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery

# The tests set CELERY_FLEET_BACKEND for the worker; the test process reads the same setting.
BACKEND = os.environ.get("CELERY_FLEET_BACKEND") or os.environ.get(
    "JOBQUEUE_TEST_CELERY_BACKEND", "redis://127.0.0.1:6379/9"
)

app = Celery(
    "fleet", broker=os.environ.get("CELERY_FLEET_BROKER", "amqp://guest:guest@127.0.0.1:5672//"), backend=BACKEND
)
app.conf.update(
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="fleet.record", bind=True)
def record(self, key, value, **kwargs):
    """Store what this call received under the Redis key ``fleet:<key>`` and return it."""
    seen = {
        "key": key,
        "value": value,
        "kwargs": kwargs,
        "id": self.request.id,
        "parent_id": self.request.parent_id,
        "root_id": self.request.root_id,
        "eta": self.request.eta,
        "retries": self.request.retries,
        "origin": self.request.origin,  # gen<pid>@<host> of the process that published
    }
    redis.Redis.from_url(BACKEND).set(f"fleet:{key}", json.dumps(seen), ex=600)
    return seen
