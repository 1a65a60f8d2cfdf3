"""Topic semaphores: ``concurrency`` slots per topic, each an owner token with a TTL."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from ..conf import settings
from .connection import get_redis
from .keys import TopicKeys
from .queue import _now_arg, _s
from .scripts import script


@dataclass(frozen=True)
class Holder:
    token: str
    info: dict[str, Any]
    expires_at: float | None = None  # epoch seconds

    @property
    def worker_id(self) -> str:
        return str(self.info.get("worker", self.token))


def _holders(flat: list[Any], with_expiry: bool) -> list[Holder]:
    step = 3 if with_expiry else 2
    out = []
    for i in range(0, len(flat), step):
        info = json.loads(_s(flat[i + 1]) or "{}")
        expiry = float(_s(flat[i + 2])) / 1000 if with_expiry else None
        out.append(Holder(token=_s(flat[i]), info=info, expires_at=expiry))
    return out


class TopicLock:
    """One slot of a topic's semaphore, owned by ``token``.

    ``TopicLock("thumbnails", token="worker-1").acquire(limit=1)`` is the classic
    one-worker-per-topic lock; ``limit=N`` lets N owners run the topic at once.
    """

    def __init__(self, topic: str, token: str, worker_id: str | None = None):
        if not isinstance(token, str) or not token:
            # lock_release.lua reads "" as "free every slot": an empty token must never reach it.
            raise ValueError(f"A topic lock needs a non-empty token, not {token!r}.")
        self.topic = topic
        self.token = token
        self.worker_id = worker_id or token
        self.keys = TopicKeys(topic)

    def _info(self) -> str:
        return json.dumps(
            {"worker": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        )

    def acquire(self, limit: int = 1, ttl: float | None = None, now_ms: int | None = None) -> bool:
        ttl = settings.LOCK_TTL_SECONDS if ttl is None else ttl
        r = get_redis()
        args = [self.token, int(limit), ttl, self._info(), _now_arg(now_ms)]
        return bool(script(r, "lock_acquire")(keys=[self.keys.lock, self.keys.holders], args=args, client=r))

    def renew(self, ttl: float | None = None, now_ms: int | None = None) -> bool:
        ttl = settings.LOCK_TTL_SECONDS if ttl is None else ttl
        r = get_redis()
        args = [self.token, ttl, _now_arg(now_ms)]
        return bool(script(r, "lock_renew")(keys=[self.keys.lock, self.keys.holders], args=args, client=r))

    def release(self) -> bool:
        r = get_redis()
        released = script(r, "lock_release")(keys=[self.keys.lock, self.keys.holders], args=[self.token], client=r)
        return bool(released)

    @staticmethod
    def force_release(topic: str) -> list[Holder]:
        """Free every slot of ``topic`` (a crashed worker's too); returns who held them."""
        k = TopicKeys(topic)
        r = get_redis()
        return _holders(script(r, "lock_release")(keys=[k.lock, k.holders], args=[""], client=r), False)

    @staticmethod
    def holders(topic: str, now_ms: int | None = None) -> list[Holder]:
        k = TopicKeys(topic)
        r = get_redis()
        flat = script(r, "lock_holders")(keys=[k.lock, k.holders], args=[_now_arg(now_ms)], client=r)
        return _holders(flat, True)
