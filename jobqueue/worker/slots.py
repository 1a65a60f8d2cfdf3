"""The topics a worker serves, and the topic slots it holds.

A topic's ``concurrency`` says how many workers may run its jobs at once: each holds one
of its slots (a :class:`~jobqueue.engine.TopicLock`, renewed by the heartbeat). A worker
takes a slot of every topic it serves, tries again later for those at their limit, and
releases them all when it stops. ``slots`` below is the worker's ``{topic: lock}``.
"""

from __future__ import annotations

import logging

from .. import engine, registry
from ..engine import TopicLock
from ..models import Job, JobStatus, Topic

logger = logging.getLogger("jobqueue.worker")


def resolve_topics(requested: list[str] | None) -> list[str]:
    """The topics to serve: ``requested`` (each known), or every registered one.

    Registered topics must have their rows already (``Topic.objects.sync_registered()``).
    """
    if requested is None:
        topics = registry.topics()
        if not topics:
            raise ValueError("No topics to serve: no @handler is registered (give --topics).")
        return topics
    known = set(Topic.objects.values_list("name", flat=True)) | set(registry.topics())
    # A resolver's topic (shell, a script, a task queue) may have no row before its first job.
    unknown = [t for t in requested if t not in known and registry.get(t) is None]
    if unknown:
        raise ValueError(f"Unknown topic(s): {', '.join(unknown)}. Known topics: {', '.join(sorted(known))}.")
    return list(dict.fromkeys(requested))


def topic_rows(topics: list[str]) -> dict[str, Topic]:
    """The rows of ``topics`` that have one (the worker's cache, refreshed with its slots)."""
    return {t.name: t for t in Topic.objects.filter(name__in=topics)}


def configure_flow(topics: list[str], rows: dict[str, Topic], turns: dict[str, bool]) -> None:
    """Give the engine each topic's flow options (rate, concurrency per key, turns between
    keys). A topic that does not take turns between keys (first seen so, or no longer) has
    its per-key sub-queues merged back into its queue. ``turns`` is the worker's memory of
    which topics took turns."""
    for topic in topics:
        row = rows.get(topic)
        limits = row.flow_limits() if row is not None else None
        engine.flow.configure(topic, limits)
        takes_turns = limits is not None and limits.takes_turns
        if not takes_turns and turns.get(topic, True):
            engine.safe_call(engine.flow.repair, topic, True)
        turns[topic] = takes_turns


def take_slots(worker_id: str, topics: list[str], slots: dict[str, TopicLock], rows: dict[str, Topic]) -> None:
    """Take a slot of each of ``topics`` not held yet, within its concurrency (from its
    row in ``rows``; 1 without one)."""
    missing = [t for t in topics if t not in slots]
    busy = running_elsewhere(worker_id, missing) if missing else {}
    for topic in missing:
        row = rows.get(topic)
        limit = max(1, row.concurrency if row else 1)
        if busy.get(topic, 0) >= limit:
            logger.debug("Topic %s has jobs running on %s other live worker(s) (%s allowed); will retry.", topic,
                         busy[topic], limit)
            continue
        lock = TopicLock(topic, token=f"{worker_id}", worker_id=worker_id)
        if lock.acquire(limit=limit):
            slots[topic] = lock
            logger.info("Worker %s took a slot of topic %s (%s allowed).", worker_id, topic, limit)
        else:
            logger.debug("Topic %s is at its concurrency limit (%s); will retry.", topic, limit)


def running_elsewhere(worker_id: str, topics: list[str]) -> dict[str, int]:
    """Per topic, how many other live workers the database says are running its jobs.

    A slot is taken only below the topic's concurrency by this count too: if Redis lost
    the semaphore (a flush, a failover that promoted a replica without the last slot
    taken), the workers still running jobs of the topic keep it full until they finish.
    Workers are counted, not jobs: one slot's worker may hold several rows running, the
    next jobs it claimed ahead of starting them (see ``readahead.py``). A worker whose
    heartbeat is stale is not counted (its jobs go back through the reaper).
    """
    live = {str(w["id"]) for w in engine.live_workers() if not w["stale"]}
    running = (Job.objects.filter(topic_id__in=topics, status=JobStatus.RUNNING).exclude(worker_id=worker_id)
               .order_by().values_list("topic_id", "worker_id").distinct())
    counts: dict[str, int] = {}
    for topic, other in running:
        if other in live:
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def release_slots(slots: dict[str, TopicLock]) -> None:
    """Release every slot held (a Redis outage only leaves them to expire)."""
    for topic, lock in list(slots.items()):
        engine.safe_call(lock.release)
        slots.pop(topic, None)


def owned_topics(topics: list[str], slots: dict[str, TopicLock]) -> list[str]:
    """The ``topics`` whose slot is held, in order."""
    return [t for t in topics if t in slots]
