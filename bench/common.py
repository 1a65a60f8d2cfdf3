"""What every system's no-op job does: nothing, except leave a timestamp when asked.

The runner marks the first and the last job of a drain, and numbers the jobs of the
latency run; only those touch Redis, so a plain job costs each system nothing but
its own bookkeeping. Used by jobqueue's handlers, Celery's tasks and RQ's functions.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

#: Redis keys the marks are written to (in the benchmark's Redis database).
FIRST_KEY = "bench:first"
LAST_KEY = "bench:last"
WARM_KEY = "bench:warm"
LATENCY_KEY = "bench:latency"

_clients: dict[int, redis.Redis] = {}


def client() -> redis.Redis:
    """A Redis client for this process (a forked child opens its own)."""
    pid = os.getpid()
    if pid not in _clients:
        from django.conf import settings

        _clients.clear()
        _clients[pid] = redis.Redis.from_url(settings.REDIS_URL)
    return _clients[pid]


def run(mark: str | None = None, index: int | None = None, sleep: float = 0.0) -> None:
    """The body of every benchmark job.

    ``mark="first"`` records the start time, ``mark="last"`` the end time,
    ``mark="warm"`` that a warm-up job ran; ``index`` records the start time of
    latency job number ``index``; ``sleep`` stands for waiting on I/O.
    """
    if index is not None:
        client().hset(LATENCY_KEY, str(index), repr(time.time()))
    if mark == "first":
        client().set(FIRST_KEY, repr(time.time()))
    if sleep:
        time.sleep(sleep)
    if mark == "last":
        client().set(LAST_KEY, repr(time.time()))
    elif mark == "warm":
        client().incr(WARM_KEY)


def run_payload(payload: Any) -> None:
    """:func:`run` for a jobqueue payload (a dict of its keyword arguments)."""
    if payload:
        run(**payload)
