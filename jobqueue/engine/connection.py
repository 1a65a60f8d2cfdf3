"""The Redis client jobqueue uses: a django-redis (or Django RedisCache) alias, or a URL.

A ``redis+cluster://host:port`` URL (or ``rediss+cluster://``; several startup nodes
separated by commas, ``redis+cluster://h1:7000,h2:7000``) names a Redis Cluster: the
client is then redis-py's :class:`~redis.cluster.RedisCluster`, which sends each command
to the master of its key's slot. Every key of a topic carries the topic as a hash tag, so
each Lua script touches one slot and runs on one master.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import redis
from django.conf import settings as django_settings
from django.core.cache import caches
from django_redis import get_redis_connection
from redis.cluster import ClusterNode, RedisCluster

from ..conf import settings

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], redis.Redis] = {}


class _Waiting(threading.local):
    #: Reads this thread's push sent without waiting (:mod:`.sending`), or ``None``.
    read: Callable[[], None] | None = None


#: Per thread: called before the thread's next use of the client, so that it sees its pushes.
waiting = _Waiting()


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


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: object) -> bool:
    return isinstance(url, str) and url.startswith(CLUSTER_SCHEMES)


def cluster_client(url: str, **kwargs: Any) -> RedisCluster:
    """A :class:`RedisCluster` for ``redis+cluster://h1:p1[,h2:p2...][?options]``."""
    scheme, _, rest = url.partition("+cluster://")
    netloc, sep, tail = rest.partition("/")
    auth, _, hosts = netloc.rpartition("@")
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host:
            raise ConfigurationError(f"{url!r}: each cluster node is host:port.")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    first = f"{scheme}://{auth + '@' if auth else ''}{hosts.split(',')[0].strip()}{sep}{tail}"
    return RedisCluster.from_url(first, startup_nodes=nodes, **kwargs)


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster."""
    kind: Any = type(client)
    return _is_cluster_class(kind)


@functools.cache
def _is_cluster_class(kind: Any) -> bool:
    # Asked once per class: RedisCluster's bases include a typing Protocol, which makes
    # isinstance() on it slow (a measurable part of an enqueue, which asks every time).
    return issubclass(kind, RedisCluster)


def get_redis() -> redis.Redis:
    """The shared Redis client for the current settings and process."""
    if waiting.read is not None:
        waiting.read()
    url = settings.REDIS_URL
    key = (os.getpid(), "url", url) if url else (os.getpid(), "cache", settings.CACHE_ALIAS)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                if is_cluster_url(url):
                    # Typed as a Redis: RedisCluster answers the same commands (per slot).
                    client = cast(redis.Redis, cluster_client(url, socket_connect_timeout=5))
                elif url:
                    client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
                else:
                    client = _client_from_cache(settings.CACHE_ALIAS)
                _clients[key] = client
    return client


def reset_clients() -> None:
    """Forget every client (after a fork, or in tests)."""
    with _lock:
        _clients.clear()
