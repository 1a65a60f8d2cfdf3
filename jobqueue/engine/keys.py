"""Redis key names. Every key of a topic carries ``{topic}`` as a hash tag, so a topic
lives in one Redis Cluster slot and each Lua script touches one slot."""

from __future__ import annotations

from functools import cached_property, lru_cache

from ..conf import settings


class TopicKeys:
    def __init__(self, topic: str, prefix: str | None = None):
        self.topic = topic
        self.base = f"{prefix or settings.PREFIX}:{{{topic}}}"

    def _key(self, name: str) -> str:
        return f"{self.base}:{name}"

    queue = cached_property(lambda self: self._key("queue"))
    seq = cached_property(lambda self: self._key("seq"))
    leases = cached_property(lambda self: self._key("leases"))
    entities = cached_property(lambda self: self._key("entities"))
    scheduled = cached_property(lambda self: self._key("scheduled"))
    schedprio = cached_property(lambda self: self._key("scheduled:priority"))
    lock = cached_property(lambda self: self._key("lock"))
    holders = cached_property(lambda self: self._key("lock:holders"))
    paused = cached_property(lambda self: self._key("paused"))
    wake = cached_property(lambda self: self._key("wake"))
    abort = cached_property(lambda self: self._key("abort"))
    cron = cached_property(lambda self: self._key("cron"))
    reconcile = cached_property(lambda self: self._key("reconcile"))
    reconcile_turn = cached_property(lambda self: self._key("reconcile:turn"))
    metrics = cached_property(lambda self: self._key("metrics"))
    epoch = cached_property(lambda self: self._key("epoch"))
    #: Flow control (see ``flow_pop.lua``): the rate limiter's state, each waiting key's job
    #: in the queue, the key of every queued keyed job, the keyed jobs waiting behind their
    #: key's, and the leased keyed jobs (the last two sorted by text, read key by key).
    rate = cached_property(lambda self: self._key("rate"))
    heads = cached_property(lambda self: self._key("keyheads"))
    keyof = cached_property(lambda self: self._key("keyof"))
    keyqueue = cached_property(lambda self: self._key("keyqueue"))
    keyrun = cached_property(lambda self: self._key("keyrun"))
    #: Set while a pop found jobs it could not take for their key's limit: the end of a
    #: lease (ack, fail, retry, removal) then wakes the idle workers (see ``flow_pop.lua``).
    keyfull = cached_property(lambda self: self._key("keyfull"))

    def all(self) -> list[str]:
        names = ["queue", "seq", "leases", "entities", "scheduled", "schedprio", "lock", "holders", "paused", "wake"]
        names += ["abort", "cron", "reconcile", "reconcile_turn", "metrics", "epoch"]
        names += ["rate", "heads", "keyof", "keyqueue", "keyrun", "keyfull"]
        return [getattr(self, name) for name in names]


def topic_keys(topic: str) -> TopicKeys:
    """The keys of ``topic`` under the current prefix (built once per prefix and topic)."""
    return _topic_keys(settings.PREFIX, topic)


@lru_cache(maxsize=1024)
def _topic_keys(prefix: str, topic: str) -> TopicKeys:
    return TopicKeys(topic, prefix)


def workers_key() -> str:
    """Hash: worker id -> JSON {host, pid, topics, beat} (the live worker registry)."""
    return f"{settings.PREFIX}:workers"


def rollup_key() -> str:
    """String: present while a worker has its turn at the metrics tally's roll-up (it expires)."""
    return f"{settings.PREFIX}:rollup"


def topics_key() -> str:
    """Set of topics that have had jobs in Redis (for maintenance across all topics)."""
    return f"{settings.PREFIX}:topics"
