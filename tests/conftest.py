"""Fixtures shared by the suite: a real Redis, flushed around every test."""

from __future__ import annotations

import pytest
import redis


def pytest_sessionstart(session):
    from django.conf import settings

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {settings.REDIS_URL} is not reachable ({exc}); the suite needs a real Redis.", 3)


@pytest.fixture
def redis_client():
    from jobqueue.engine import get_redis

    return get_redis()


@pytest.fixture(autouse=True)
def _clean_redis():
    from jobqueue.engine import get_redis, reset_clients
    from jobqueue.engine.queue import forget_announced
    from jobqueue.managers import clear_topic_cache

    reset_clients()
    forget_announced()
    clear_topic_cache()
    client = get_redis()
    client.flushdb()
    yield
    get_redis().flushdb()
