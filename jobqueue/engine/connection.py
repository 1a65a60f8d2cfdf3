"""The Redis client jobqueue uses: a django-redis (or Django RedisCache) alias, or a URL."""

from __future__ import annotations

import os
import threading
from typing import Any, cast

import redis
from django.conf import settings as django_settings
from django.core.cache import caches
from django_redis import get_redis_connection

from ..conf import settings

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], redis.Redis] = {}


class ConfigurationError(Exception):
    """``JOBQUEUE`` names a Redis that cannot be used."""


def _client_from_cache(alias: str) -> redis.Redis:
    if alias not in django_settings.CACHES:
        raise ConfigurationError(f"JOBQUEUE['CACHE_ALIAS'] = {alias!r} is not in settings.CACHES.")
    config = cast(dict[str, Any], django_settings.CACHES[alias])
    backend = str(config.get("BACKEND", ""))
    if backend.startswith("django_redis."):
        return get_redis_connection(alias)
    if backend == "django.core.cache.backends.redis.RedisCache":
        return caches[alias]._cache.get_client(write=True)  # type: ignore[attr-defined]
    raise ConfigurationError(
        f"CACHES[{alias!r}] uses {backend!r}, which is not Redis; use django_redis or Django's RedisCache, "
        "or set JOBQUEUE['REDIS_URL']."
    )


def get_redis() -> redis.Redis:
    """The shared Redis client for the current settings and process."""
    url = settings.REDIS_URL
    key = (os.getpid(), "url", url) if url else (os.getpid(), "cache", settings.CACHE_ALIAS)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                if url:
                    client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
                else:
                    client = _client_from_cache(settings.CACHE_ALIAS)
                _clients[key] = client
    return client


def reset_clients() -> None:
    """Forget every client (after a fork, or in tests)."""
    with _lock:
        _clients.clear()
