"""The live-worker registry: each worker's heartbeat writes where the admin can read it."""

from __future__ import annotations

import json
import time
from typing import Any

from ..conf import settings
from .connection import get_redis
from .keys import workers_key
from .queue import _s


def beat(worker_id: str, info: dict[str, Any]) -> None:
    """Record a heartbeat: ``info`` holds host, pid, topics owned, current jobs..."""
    record = dict(info, id=worker_id, beat=time.time())
    get_redis().hset(workers_key(), worker_id, json.dumps(record))


def forget(worker_id: str) -> None:
    get_redis().hdel(workers_key(), worker_id)


def live_workers(prune_after: float | None = None) -> list[dict[str, Any]]:
    """Every registered worker, newest beat first, each with ``stale`` (no beat for
    ``WORKER_STALE_SECONDS``) and ``age`` in seconds. Entries silent for longer than
    ``prune_after`` seconds (default: 10 x stale) are dropped."""
    now = time.time()
    stale_after = settings.WORKER_STALE_SECONDS
    prune = stale_after * 10 if prune_after is None else prune_after
    r = get_redis()
    out = []
    for key, raw in r.hgetall(workers_key()).items():
        try:
            record = json.loads(_s(raw))
        except ValueError:
            record = {}
        age = now - float(record.get("beat", 0))
        if age > prune:
            r.hdel(workers_key(), key)
            continue
        record.update(id=_s(key), age=age, stale=age > stale_after)
        out.append(record)
    return sorted(out, key=lambda w: w["age"])
