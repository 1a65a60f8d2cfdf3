"""Helpers for the Celery bridge's tests: a real Celery app on a real broker, a queue of
its own per test (deleted afterwards), and the bridge run in this process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from django.conf import settings
from kombu import Connection, Exchange, Producer, Queue

#: The Celery task names the tests send, and the topics they map to (``tests/testapp/jobs.py``).
TASKS = {"tests.celery.add": "echo", "tests.celery.other": "other"}


def broker_url(kind: str) -> str:
    return {"amqp": settings.AMQP_BROKER_URL, "redis": settings.REDIS_BROKER_URL}[kind]


class Broker:
    """One broker (``amqp`` or ``redis``) with a queue no other test uses, and a Celery app sending to it."""

    def __init__(self, kind: str):
        self.kind = kind
        self.url = broker_url(kind)
        self.queue = f"jqtest-{uuid.uuid4().hex[:12]}"
        self.app = Celery(f"tests-{self.queue}", broker=self.url, set_as_current=False)
        self.app.conf.update(task_default_queue=self.queue, task_ignore_result=True,
                             broker_connection_retry_on_startup=True, task_serializer="json")

        @self.app.task(name="tests.celery.add")
        def add(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the Celery worker never runs in these tests")

        self.add = add

    def kombu_queue(self) -> Queue:
        return Queue(self.queue, Exchange(self.queue, type="direct"), routing_key=self.queue)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with Connection(self.url) as conn:
            yield conn

    def publish(self, body: Any, *, headers: dict[str, Any] | None = None, serializer: str = "json",
                **properties: Any) -> None:
        """Publish a message as kombu would for any sender, declaring the queue first."""
        with self.connection() as conn:
            producer = Producer(conn.channel(), exchange=self.kombu_queue().exchange, routing_key=self.queue)
            producer.publish(body, headers=headers or {}, serializer=serializer, declare=[self.kombu_queue()],
                             **properties)

    def publish_raw(self, body: bytes, content_type: str, headers: dict[str, Any], encoding: str = "binary") -> None:
        with self.connection() as conn:
            producer = Producer(conn.channel(), exchange=self.kombu_queue().exchange, routing_key=self.queue)
            producer.publish(body, headers=headers, content_type=content_type, content_encoding=encoding,
                             declare=[self.kombu_queue()])

    def waiting(self) -> int:
        """Messages in the queue, not taken by any consumer."""
        with self.connection() as conn:
            return self.kombu_queue()(conn.channel()).queue_declare().message_count

    def unacked(self) -> int:
        """Redis only: messages taken by a consumer and not acknowledged (kombu's ``unacked`` hash)."""
        with self.connection() as conn:
            return conn.channel().client.hlen("unacked")

    def delete(self) -> None:
        with self.connection() as conn:
            channel = conn.channel()
            queue = self.kombu_queue()(channel)
            queue.delete()
            queue.exchange.delete()
            if self.kind == "redis":  # kombu keeps its bindings in keys of their own
                channel.client.delete(f"_kombu.binding.{self.queue}", f"_kombu.binding_permanent.{self.queue}")
        self.app.close()


def run_bridge(broker: Broker, tasks: dict[str, str] | None = None, **options: Any) -> Any:
    """Run the bridge in this process over the broker's queue until it is empty; its Tally."""
    from jobqueue.contrib.celery.bridge import BridgeOptions, CeleryBridge

    options.setdefault("burst", True)
    bridge = CeleryBridge(broker.url, [broker.queue], TASKS if tasks is None else tasks, BridgeOptions(**options))
    return bridge.run()
