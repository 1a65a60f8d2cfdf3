"""Fixtures shared by the suite: a real Redis, flushed around every test."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent

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
    """Mark the system tests; deselect (never skip) the tests for the other kind of Redis:
    ``redis_cluster`` ones need the suite on a Redis Cluster (tox's cluster environment),
    ``single_redis`` ones a single Redis server."""
    from django.conf import settings

    unwanted = "single_redis" if settings.REDIS_CLUSTER else "redis_cluster"
    kept, dropped = [], []
    for item in items:
        if item.path.name in SYSTEM_MODULES:
            item.add_marker(pytest.mark.system)
        (dropped if item.get_closest_marker(unwanted) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_sessionstart(session):
    from django.conf import settings

    if settings.REDIS_CLUSTER:
        _start_cluster(settings.REDIS_URL)
    try:
        if settings.REDIS_CLUSTER:
            from jobqueue.engine.connection import cluster_client

            cluster_client(settings.REDIS_URL, socket_connect_timeout=3).ping()
        else:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {settings.REDIS_URL} is not reachable ({exc}); the suite needs a real Redis.", 3)
    _require_rabbitmq(settings.AMQP_BROKER_URL)


def _start_cluster(url: str) -> None:
    """Start the local Redis Cluster of ``redis+cluster://127.0.0.1:PORT`` unless it runs
    (scripts/redis-cluster.sh is idempotent); a remote cluster is left alone."""
    first = urlsplit(url.replace("+cluster", "", 1)).netloc.split(",")[0]
    host, _, port = first.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        return
    script = ROOT / "scripts" / "redis-cluster.sh"
    done = subprocess.run([str(script), "start"], env={"PATH": "/usr/local/bin:/usr/bin:/bin",
                                                       "REDIS_CLUSTER_PORT": port or "7000"},
                          capture_output=True, text=True)
    if done.returncode:
        pytest.exit(f"Could not start the Redis Cluster at {url}:\n{done.stdout}{done.stderr}", 3)


def flush_redis(client) -> None:
    """Empty jobqueue's Redis: the test database, or every master of a cluster."""
    from jobqueue.engine.connection import is_cluster

    if is_cluster(client):
        client.flushdb(target_nodes=client.PRIMARIES)
    else:
        client.flushdb()


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
def no_flow_options():
    """No topic's flow limits known to this process before or after the test."""
    from jobqueue.engine import flow

    flow._limits.clear()
    flow._blocked_until.clear()
    yield
    flow._limits.clear()
    flow._blocked_until.clear()


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
    flush_redis(get_redis())
    yield
    flush_redis(get_redis())
