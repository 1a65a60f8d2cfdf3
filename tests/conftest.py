"""Fixtures shared by the suite: a real Redis, flushed around every test."""

from __future__ import annotations

import pytest
import redis

#: Modules that run the whole system from outside (real fault runs with their own servers,
#: the demo, the benchmark's smoke run, the browser, the Celery integration through real
#: brokers and a real Celery worker). Marked ``system``: two of tox's four test
#: environments run them (one of each database and each Django line), the other two
#: deselect them with ``-m "not system"`` to keep the whole run short.
SYSTEM_MODULES = frozenset({
    "test_faults.py",
    "test_demo.py",
    "test_bench_smoke.py",
    "test_browser_admin.py",
    "test_celery_bridge.py",
    "test_celery_bridge_command.py",
    "test_celery_calls.py",
    "test_celery_outbound.py",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SYSTEM_MODULES:
            item.add_marker(pytest.mark.system)


def pytest_sessionstart(session):
    from django.conf import settings

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {settings.REDIS_URL} is not reachable ({exc}); the suite needs a real Redis.", 3)
    _require_rabbitmq(settings.AMQP_BROKER_URL)


def _require_rabbitmq(url: str) -> None:
    """The Celery bridge's tests need a real RabbitMQ; without one the suite stops at once."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - whatever kombu raises, the message says what to start
        shown = Connection(url).as_uri()  # without the password
        pytest.exit(f"RabbitMQ at {shown} is not reachable ({exc!r}); the suite needs a real RabbitMQ "
                    "(start it with `rabbitmq-server -detached`, or set JOBQUEUE_TEST_AMQP_URL).", 3)


@pytest.fixture(params=["amqp", "redis"])
def broker(request):
    """A real Celery app on a queue of its own, on RabbitMQ and then on Redis (the bridge's tests)."""
    from tests.bridgeutil import Broker

    made = Broker(request.param)
    yield made
    made.delete()


@pytest.fixture
def redis_client():
    from jobqueue.engine import get_redis

    return get_redis()


@pytest.fixture(autouse=True)
def _clean_redis():
    from jobqueue.engine import get_redis, reset_clients
    from jobqueue.engine.queue import forget_announced
    from jobqueue.topic_manager import clear_topic_cache

    reset_clients()
    forget_announced()
    clear_topic_cache()
    client = get_redis()
    client.flushdb()
    yield
    get_redis().flushdb()
