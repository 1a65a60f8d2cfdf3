"""Redis's side of a resync: make one topic's Redis structures match rows it is given.

The database is the truth and Redis only a fast copy; :func:`jobqueue.resync.resync`
reads the rows and hands them to :class:`TopicResync`, which knows nothing of the
models, only ids, priorities, entity ids and due times.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..conf import settings
from . import flow
from .connection import get_redis, is_cluster
from .keys import TopicKeys, topic_keys
from .queue import PUSH_CHUNK, _s, change_priority, forget_announced, push, schedule, score_priority, set_paused


@dataclass
class ResyncReport:
    pushed: dict[str, int] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    leases: dict[str, int] = field(default_factory=dict)
    reprioritised: dict[str, int] = field(default_factory=dict)
    #: Topics whose metrics were rebuilt from the database (their Redis hash was missing).
    metrics: list[str] = field(default_factory=list)

    def total(self) -> int:
        return sum(self.pushed.values()) + sum(self.scheduled.values()) + sum(self.dropped.values())


@dataclass(frozen=True)
class TopicRows:
    """What the database holds for one topic, read after :class:`TopicResync` looked at Redis."""

    #: ``(job_id, priority, entity_id)`` of the queued rows, in queue order (priority, then time queued).
    queued: Sequence[tuple[object, int, str | None]] = ()
    #: ``(job_id, run_after, priority, entity_id)`` of the scheduled rows (``run_after`` ``None``: due now).
    scheduled: Sequence[tuple[object, datetime | None, int, str | None]] = ()
    #: Ids of the running rows.
    running: Sequence[object] = ()
    #: The job key of each queued, scheduled or running row that has one (by job id as text).
    keys: Mapping[str, str] = field(default_factory=dict)
    #: When the topic's recent attempts started (ms since the epoch), for its rate limit.
    recent_starts: Sequence[float] = ()


class TopicResync:
    """Repair one topic's queue, schedule and leases in two steps.

    Creating it reads what Redis holds; :meth:`apply` then gets the rows, read *after*
    that, and repairs the difference. In that order a job pushed or popped in between
    is at worst pushed again (a no-op) or given a lease it already has, never dropped.
    """

    def __init__(self, topic: str, paused: bool | None = None):
        self.topic = topic
        forget_announced(topic)  # Redis may have lost the set of known topics: push announces it again
        self.redis = get_redis()
        self.keys = k = TopicKeys(topic)
        if paused is not None and paused != bool(self.redis.exists(k.paused)):
            set_paused(topic, paused)
        pairs: list[tuple[bytes, float]] = self.redis.zrange(k.queue, 0, -1, withscores=True)  # type: ignore[assignment]
        self.scores = {_s(i): score for i, score in pairs}
        self.leased = {_s(i) for i in self.redis.zrange(k.leases, 0, -1)}
        self.in_schedule = {_s(i) for i in self.redis.zrange(k.scheduled, 0, -1)}
        # Jobs waiting behind their key's head (see flow.py): queued, though not in the queue.
        self.behind = flow.waiting_behind(topic)

    def apply(self, rows: TopicRows, report: ResyncReport) -> None:
        """Queued rows missing from the queue are pushed in queue order, so after a FLUSHDB
        the pop order is what it was; ids whose row is no longer queued (or scheduled) are
        dropped; scheduled rows are rescheduled; a running row without a lease gets one, so
        the reaper recovers it if no worker renews it. Counts go to ``report``."""
        topic, r, k = self.topic, self.redis, self.keys
        flow.restore_bucket(topic, rows.recent_starts)  # before any job is back in the queue
        in_queue = set(self.scores)
        queued = [(str(pk), priority, entity) for pk, priority, entity in rows.queued]
        queued_ids = {pk for pk, _, _ in queued}
        missing = [item for item in queued
                   if item[0] not in in_queue and item[0] not in self.leased and item[0] not in self.behind]
        stale = [i for i in in_queue if i not in queued_ids]
        if stale:
            r.zrem(k.queue, *stale)
        stale_behind = [i for i in self.behind if i not in queued_ids]
        for job_id in stale_behind:
            flow.remove(topic, job_id)
        if stale:
            flow.repair(topic)  # a dropped id may have been its key's head
        # A priority change that reached the database but not Redis (e.g. it raced the push),
        # also of a job waiting behind its key's (which may then take the key's place).
        turns = flow.takes_turns(topic)
        for pk, priority, _entity in queued:
            score = self.scores.get(pk)
            if score is not None:
                was, key = score_priority(score), rows.keys.get(pk) if turns else None
            elif pk in self.behind:
                key, was = self.behind[pk]
            else:
                continue
            if was != priority:
                change_priority(topic, pk, priority, key=key)
                report.reprioritised[topic] = report.reprioritised.get(topic, 0) + 1
        keyed = [(pk, p, e, rows.keys[pk]) for pk, p, e in missing if pk in rows.keys] if turns else []
        if keyed:
            missing_keyed = {item[0] for item in keyed}
            missing = [item for item in missing if item[0] not in missing_keyed]
        for start in range(0, len(missing), PUSH_CHUNK):
            push(topic, missing[start : start + PUSH_CHUNK])
        for start in range(0, len(keyed), PUSH_CHUNK):
            flow.push(topic, keyed[start : start + PUSH_CHUNK])
        pushed = len(missing) + len(keyed)

        sched = [(str(pk), (ra.timestamp() if ra else time.time()), p, e) for pk, ra, p, e in rows.scheduled]
        sched_ids = {s[0] for s in sched}
        sched_missing = [s for s in sched if s[0] not in self.in_schedule]
        sched_stale = [i for i in self.in_schedule if i not in sched_ids]
        if sched_stale:
            r.zrem(k.scheduled, *sched_stale)
            r.hdel(k.schedprio, *sched_stale)
        if sched_missing:
            schedule(topic, sched_missing, keys=rows.keys)

        unleased = [i for i in map(str, rows.running) if i not in self.leased]
        if unleased:
            # The Redis clock, as the Lua scripts use: a skewed local clock must not shorten the lease.
            seconds, micros = r.time()
            deadline = seconds * 1000 + micros // 1000 + settings.LEASE_SECONDS * 1000
            r.zadd(k.leases, {i: deadline for i in unleased})
        lim = flow.limits(topic)
        if lim is not None and lim.key_concurrency is not None:
            # Running keyed jobs count against their key's limit again (a FLUSHDB lost the sets).
            with r.pipeline(transaction=False) as pipe:
                for job_id in map(str, rows.running):
                    if job_id in rows.keys:
                        pipe.zadd(k.keyrun, {f"{rows.keys[job_id]}\t{job_id}": 0})
                pipe.execute()

        if pushed:
            report.pushed[topic] = pushed
        if sched_missing:
            report.scheduled[topic] = len(sched_missing)
        if stale or sched_stale or stale_behind:
            report.dropped[topic] = len(stale) + len(sched_stale) + len(stale_behind)
        if unleased:
            report.leases[topic] = len(unleased)



# -- which topics need a resync ---------------------------------------------------------
#
# Each topic keeps, in its own slot, an ``epoch`` key: the run id of the Redis server that
# held the topic when it was last rebuilt from the database. The key missing (a flush, a
# restart without persistence) or naming another server (a restart that reloaded an older
# snapshot, a replica promoted by a failover, which may lack the master's last writes)
# means the topic's structures may have lost writes: that topic, and only it, is resynced.
# On a Redis Cluster each topic is checked against the master that now serves its slot,
# so a failover of one shard resyncs the topics of that shard.


def _run_ids(r: Any, keys: list[str]) -> list[str]:
    """The run id of the master serving each of ``keys`` (one ``INFO`` per master)."""
    if not is_cluster(r):
        run_id = str(r.info("server")["run_id"])
        return [run_id] * len(keys)
    nodes = [r.get_node_from_key(key) for key in keys]
    by_name: dict[str, str] = {}
    for node in nodes:
        if node.name not in by_name:
            info = r.info("server", target_nodes=node)
            by_name[node.name] = str(info["run_id"])
    return [by_name[node.name] for node in nodes]


def server_epochs(topics: list[str]) -> dict[str, str]:
    """``{topic: run id of the master now holding it}``, read before a resync so that a
    failover during the resync leaves a stale stamp (and the next check resyncs again)."""
    return dict(zip(topics, _run_ids(get_redis(), [topic_keys(t).epoch for t in topics]), strict=True))


def stale_topics(topics: list[str]) -> list[str]:
    """The ``topics`` whose Redis structures may have lost writes since their last resync:
    their ``epoch`` key is missing or names another server than the one holding it now."""
    if not topics:
        return []
    r = get_redis()
    keys = [topic_keys(t).epoch for t in topics]
    with r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
        stamped = pipe.execute()
    current = _run_ids(r, keys)
    return [t for t, seen, now in zip(topics, stamped, current, strict=True) if seen is None or _s(seen) != now]


def stamp_epochs(epochs: dict[str, str]) -> None:
    """Record that each topic was rebuilt on the server of ``epochs`` (see :func:`server_epochs`)."""
    if not epochs:
        return
    with get_redis().pipeline(transaction=False) as pipe:
        for topic, run_id in epochs.items():
            pipe.set(topic_keys(topic).epoch, run_id)
        pipe.execute()
