"""A real ``celery worker -P solo`` for the tests, on its own queue of a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import redis

from .workerutil import REPO_ROOT, wait_for

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: Where the fleet stores its results (Celery's result backend) and what its task saw.
BACKEND_URL = os.environ.get("JOBQUEUE_TEST_CELERY_BACKEND", "redis://127.0.0.1:6379/9")
#: The fleet's Redis broker: the same database (each test has queues of its own).
REDIS_BROKER_URL = BACKEND_URL
BROKERS = {"rabbitmq": RABBITMQ_URL, "redis": REDIS_BROKER_URL}


def unique_queue() -> str:
    """A queue no other test run consumes."""
    return f"jq-celery-test-{uuid.uuid4().hex[:12]}"


def delete_queue(broker: str, name: str) -> None:
    from kombu import Connection, Exchange, Queue

    with Connection(broker, connect_timeout=5) as conn:
        channel = conn.channel()
        Queue(name, Exchange(name, type="direct"), routing_key=name)(channel).delete()
        Exchange(name, type="direct")(channel).delete()
    if broker.startswith("redis"):
        # kombu's Redis transport keeps a queue's bindings in keys of their own.
        redis.Redis.from_url(broker).delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


class CeleryFleet:
    """A stock Celery worker (``tests/celery_fleet.py``) consuming one fresh queue."""

    def __init__(self, broker: str, log_dir: Path):
        self.broker = broker
        self.queue = unique_queue()
        self.log = log_dir / f"celery-{self.queue}.log"
        env = {
            **os.environ,
            "CELERY_FLEET_BROKER": broker,
            "CELERY_FLEET_BACKEND": BACKEND_URL,
            "PYTHONPATH": REPO_ROOT,
        }
        command = [
            sys.executable, "-m", "celery", "-A", "tests.celery_fleet", "worker", "-P", "solo", "-Q", self.queue,
            "--hostname", f"{self.queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "info",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.redis = redis.Redis.from_url(BACKEND_URL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"celery worker exited ({self.proc.returncode}):\n{self.output()}")
            return " ready." in self.output()

        wait_for(ready, timeout, "the celery worker to be ready", interval=0.2)

    def seen(self, key: str, timeout: float = 30.0) -> dict[str, Any]:
        """What the fleet's task stored for ``key`` (waits for it)."""

        def stored() -> Any:
            return self.redis.get(f"fleet:{key}")

        try:
            raw = wait_for(stored, timeout, f"the Celery task to record {key!r}", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- celery worker log ---\n{self.output()}") from None
        return json.loads(raw)

    def result(self, task_id: str, timeout: float = 30.0) -> Any:
        """The task's return value, read from Celery's result backend (``AsyncResult``)."""
        from celery.result import AsyncResult

        from .celery_fleet import app

        return AsyncResult(task_id, app=app).get(timeout=timeout)

    def close(self) -> None:
        # Killed: a warm (or even cold) shutdown of a solo worker on RabbitMQ takes ~10 s, and
        # the test has read what it needs; what the worker held goes back to its queue.
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        delete_queue(self.broker, self.queue)
