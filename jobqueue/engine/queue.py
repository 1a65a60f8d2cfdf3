"""Queue operations on a topic: each is one Lua script call (or one pipeline of them)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import redis

from ..conf import settings
from ..constants import MAX_PRIORITY
from . import flow, sending
from .connection import get_redis, is_cluster
from .keys import topic_keys, topics_key
from .scripts import script

logger = logging.getLogger("jobqueue.engine")

T = TypeVar("T")

#: A queued job's score is (MAX_PRIORITY - priority) * PRIORITY_SHIFT + its push sequence, so
#: the highest priority sorts first (see push.lua). The scripts that score a job write both
#: numbers as literals; tests/test_facts.py checks that they are these.
PRIORITY_SHIFT = 2**44


def score_priority(score: float) -> int:
    """The priority that a queued job's score encodes."""
    return MAX_PRIORITY - int(score) // PRIORITY_SHIFT

#: Ids pushed per Lua call when pushing in bulk.
PUSH_CHUNK = 1000


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_arg(now_ms: int | None) -> str:
    return "" if now_ms is None else str(int(now_ms))


def safe_call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call an engine function, logging (not raising) a Redis outage.

    Used after a commit: the database already holds the truth, and
    ``resync()`` repairs Redis once it is back.
    """
    try:
        return func(*args, **kwargs)
    except redis.RedisError as exc:
        logger.warning("Redis unavailable during %s (%s); the database keeps the job, resync repairs Redis.",
                       getattr(func, "__name__", func), exc)
        return None


_announced: set[tuple[str, str]] = set()


def _announce(topic: str, client: Any) -> None:
    """Add ``topic`` to the set of known topics, once per process (saves a round trip per push)."""
    key = topics_key()
    if (key, topic) not in _announced:
        client.sadd(key, topic)
        _announced.add((key, topic))


def forget_announced(topic: str | None = None) -> None:
    """Forget that this process announced ``topic`` (every topic by default), e.g. in a
    resync after a FLUSHDB: its next push announces it again."""
    if topic is None:
        _announced.clear()
    else:
        _announced.discard((topics_key(), topic))


def push(topic: str, items: Iterable[tuple[str, int, str | None]], client: Any = None, tally: str = "") -> int:
    """Queue ``(job_id, priority, entity_id)`` items; returns how many were added.

    ``tally`` is added to the topic's metrics hash in the same call (see :mod:`.metrics`).
    """
    k = topic_keys(topic)
    r = client if client is not None else get_redis()
    argv: list[Any] = [tally]
    for job_id, priority, entity in items:
        argv += [str(job_id), int(priority), entity or ""]
    if len(argv) == 1:
        return 0
    keys = [getattr(k, name) for name in sending.PUSH_KEYS]
    result = script(get_redis(), "push")(keys=keys, args=argv, client=r)
    _announce(topic, r)
    return result if isinstance(result, int) else 0


def schedule(topic: str, items: Iterable[tuple[str, float, int, str | None]], client: Any = None,
             tally: str = "", keys: Mapping[str, str] | None = None) -> None:
    """Hold ``(job_id, due_epoch_seconds, priority, entity_id)`` items until due (and add
    ``tally`` to the topic's metrics hash). ``keys`` gives the job key of keyed items: on a
    topic that takes turns between keys, such a job goes behind its key's once it is due
    (``promote.lua``), so its key's limit and turns hold."""
    k = topic_keys(topic)
    r = client if client is not None else get_redis()
    keyed = keys if keys and flow.takes_turns(topic) else {}
    argv: list[Any] = [tally]
    for job_id, due, priority, entity in items:
        argv += [str(job_id), int(due * 1000), int(priority), entity or "", keyed.get(str(job_id)) or ""]
    if len(argv) > 1:
        keys_ = [k.scheduled, k.schedprio, k.entities, k.leases, k.metrics, k.keyof, k.keyfull, k.wake]
        script(get_redis(), "schedule")(keys=keys_, args=argv, client=r)
        _announce(topic, r)


def push_jobs(jobs: Iterable[Any], enqueued: bool = False) -> None:
    """Push queued jobs and schedule scheduled ones, one pipeline for all topics.

    ``enqueued``: the jobs are new, and each (waiting ones too) counts as enqueued in its
    topic's metrics.
    """
    queued: dict[str, list[tuple[str, int, str | None]]] = defaultdict(list)
    keyed: dict[str, list[tuple[str, int, str | None, str | None]]] = defaultdict(list)
    scheduled: dict[str, list[tuple[str, float, int, str | None]]] = defaultdict(list)
    waiting: dict[str, int] = defaultdict(int)
    scheduled_keys: dict[str, dict[str, str]] = defaultdict(dict)
    for job in jobs:
        key = getattr(job, "key", None)
        if job.status == "queued":
            if key and flow.takes_turns(job.topic_id):
                keyed[job.topic_id].append((str(job.pk), job.priority, job.entity_id, key))
            else:
                queued[job.topic_id].append((str(job.pk), job.priority, job.entity_id))
        elif job.status == "scheduled" and job.run_after is not None:
            scheduled[job.topic_id].append((str(job.pk), job.run_after.timestamp(), job.priority, job.entity_id))
            if key:  # its key's limit and turns hold once it is due
                scheduled_keys[job.topic_id][str(job.pk)] = key
        elif job.status == "waiting":
            waiting[job.topic_id] += 1
    r = get_redis()
    if not is_cluster(r):  # the plain pushes packed by hand, in a round trip of their own
        for topic, items in queued.items():
            chunks = [(f"enqueued={len(chunk)}" if enqueued else "", chunk)
                      for chunk in (items[start : start + PUSH_CHUNK] for start in range(0, len(items), PUSH_CHUNK))]
            sending.send_many(r, topic, chunks, push)
            _announce(topic, r)
        queued.clear()
    with r.pipeline(transaction=False) as pipe:
        for topic, items in queued.items():
            for start in range(0, len(items), PUSH_CHUNK):
                chunk = items[start : start + PUSH_CHUNK]
                push(topic, chunk, client=pipe, tally=f"enqueued={len(chunk)}" if enqueued else "")
        for topic, kitems in keyed.items():
            for start in range(0, len(kitems), PUSH_CHUNK):
                kchunk = kitems[start : start + PUSH_CHUNK]
                flow.push(topic, kchunk, client=pipe, tally=f"enqueued={len(kchunk)}" if enqueued else "")
                _announce(topic, pipe)
        for topic, sitems in scheduled.items():
            for start in range(0, len(sitems), PUSH_CHUNK):
                due = sitems[start : start + PUSH_CHUNK]
                schedule(topic, due, client=pipe, tally=f"enqueued={len(due)}" if enqueued else "",
                         keys=scheduled_keys.get(topic))
        if enqueued:
            for topic, count in waiting.items():  # in no queue yet: only counted
                pipe.hincrby(topic_keys(topic).metrics, "enqueued", count)
        if len(pipe):
            pipe.execute()


def push_job(job: Any, tally: str = "") -> None:
    """Push one job: a single script call, no pipeline. ``tally`` goes to the topic's
    metrics hash in the same call (see :mod:`.metrics`)."""
    key = getattr(job, "key", None)
    if key and job.status == "queued" and flow.takes_turns(job.topic_id):
        flow.push(job.topic_id, [(str(job.pk), job.priority, job.entity_id, key)], tally=tally)
        _announce(job.topic_id, get_redis())
        return
    if job.status == "queued":
        push(job.topic_id, [(str(job.pk), job.priority, job.entity_id)], tally=tally)
    elif job.status == "scheduled" and job.run_after is not None:
        schedule(job.topic_id, [(str(job.pk), job.run_after.timestamp(), job.priority, job.entity_id)], tally=tally,
                 keys={str(job.pk): key} if key else None)


def send_job(job: Any, tally: str = "") -> None:
    """Push one new queued job without waiting for Redis's answer (:mod:`.sending`);
    where that does not apply (a Redis Cluster, a topic that takes turns between keys, a
    scheduled job) this is :func:`push_job`."""
    r = get_redis()
    key = getattr(job, "key", None)
    if job.status != "queued" or is_cluster(r) or (key and flow.takes_turns(job.topic_id)):
        push_job(job, tally)
        return
    item = (str(job.pk), job.priority, job.entity_id)
    sending.send(r, job.topic_id, *item, tally, lambda: push(job.topic_id, [item], tally=tally))
    _announce(job.topic_id, r)


def pop(topic: str, count: int = 1, lease_seconds: float | None = None, now_ms: int | None = None,
        slot_token: str | None = None) -> list[str]:
    """Lease up to ``count`` ids, highest priority first; nothing while the topic is paused,
    nor, given a ``slot_token``, once that slot of the topic's semaphore is gone."""
    lim = flow.limits(topic)
    if lim is not None:  # the topic has flow options (flow_pop.lua)
        return flow.pop(topic, lim, count, lease_seconds, now_ms, slot_token)
    k = topic_keys(topic)
    lease = settings.LEASE_SECONDS if lease_seconds is None else lease_seconds
    r = get_redis()
    keys = [k.queue, k.leases, k.paused, k.lock]
    ids = script(r, "pop")(keys=keys, args=[lease, count, _now_arg(now_ms), slot_token or ""], client=r)
    return [_s(i) for i in ids]


def ack(topic: str, job_id: str, entity_id: str | None = None, tally: str = "") -> bool:
    """Drop a finished job's lease and entity mapping (and add ``tally`` to the topic's metrics)."""
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.leases, k.entities, k.abort, k.metrics, k.keyfull, k.wake]
    return bool(script(r, "ack")(keys=keys, args=[str(job_id), entity_id or "", tally], client=r))


def ack_and_pop(topic: str, job_id: str, entity_id: str | None = None, count: int = 1,
                lease_seconds: float | None = None, now_ms: int | None = None,
                slot_token: str | None = None, tally: str = "") -> list[str]:
    """:func:`ack` a finished job and :func:`pop` the topic's next ones, in one call."""
    return acks_and_pop(topic, [(str(job_id), entity_id or "", tally)], count, lease_seconds, now_ms, slot_token)


def acks_and_pop(topic: str, finished: Sequence[tuple[str, str, str]], count: int = 1,
                 lease_seconds: float | None = None, now_ms: int | None = None,
                 slot_token: str | None = None) -> list[str]:
    """:func:`ack` the ``finished`` jobs (``(job id, entity id or "", tally)`` each) and
    :func:`pop` up to ``count`` next ones (none for 0), in one call.

    A topic with flow options acknowledges all but the last finished job in calls of
    their own: ``flow_pop.lua`` takes one.
    """
    lim = flow.limits(topic)
    if lim is not None:
        for job_id, entity_id, tally in finished[:-1]:
            ack(topic, job_id, entity_id, tally)
        last = finished[-1] if finished else None
        if count < 1:
            if last is not None:
                ack(topic, *last)
            return []
        return flow.pop(topic, lim, count, lease_seconds, now_ms, slot_token, last)
    r = get_redis()
    keys, args = _ack_pop_call(topic, finished, count, lease_seconds, now_ms, slot_token)
    return [_s(i) for i in script(r, "ack_pop")(keys=keys, args=args, client=r)]


def _ack_pop_call(topic: str, finished: Sequence[tuple[str, str, str]], count: int, lease_seconds: float | None,
                  now_ms: int | None, slot_token: str | None) -> tuple[list[str], list[Any]]:
    """The keys and arguments of ``ack_pop.lua`` for :func:`acks_and_pop`."""
    k = topic_keys(topic)
    lease = settings.LEASE_SECONDS if lease_seconds is None else lease_seconds
    keys = [k.queue, k.leases, k.paused, k.entities, k.abort, k.lock, k.metrics]
    args: list[Any] = [lease, max(0, int(count)), _now_arg(now_ms), slot_token or ""]
    for job_id, entity_id, tally in finished:
        args += [str(job_id), entity_id or "", tally]
    return keys, args


def extend_leases(topic: str, job_ids: Iterable[str], lease_seconds: float | None = None,
                  now_ms: int | None = None) -> list[str]:
    """Extend leases; returns the ids whose lease was gone (the caller no longer owns them)."""
    ids = [str(i) for i in job_ids]
    if not ids:
        return []
    k = topic_keys(topic)
    lease = settings.LEASE_SECONDS if lease_seconds is None else lease_seconds
    r = get_redis()
    lost = script(r, "extend")(keys=[k.leases], args=[lease, _now_arg(now_ms), *ids], client=r)
    return [_s(i) for i in lost]


def claim_expired(topic: str, grace_seconds: float | None = None, limit: int = 100,
                  now_ms: int | None = None) -> list[str]:
    """Claim expired leases for the reaper (see ``claim_expired.lua``)."""
    k = topic_keys(topic)
    grace = settings.LEASE_SECONDS if grace_seconds is None else grace_seconds
    r = get_redis()
    ids = script(r, "claim_expired")(keys=[k.leases], args=[grace, limit, _now_arg(now_ms)], client=r)
    return [_s(i) for i in ids]


def remove(topic: str, job_id: str, entity_id: str | None = None, client: Any = None, key: str | None = None) -> bool:
    """Drop a job from its topic's queue, schedule, leases and entity map (and, given its
    job ``key``, from its key's sub-queue: see :mod:`.flow`).

    With ``client`` (a pipeline) the call is queued there and its result comes from ``execute()``.
    """
    if key:
        return flow.remove(topic, job_id, entity_id, client)
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.queue, k.leases, k.entities, k.scheduled, k.schedprio]
    args = [str(job_id), entity_id or ""]
    return bool(script(r, "remove")(keys=keys, args=args, client=r if client is None else client))


def change_priority(topic: str, job_id: str | None, priority: int, entity_id: str | None = None,
                    client: Any = None, key: str | None = None) -> str | None:
    """Re-score a queued (or scheduled) job; by entity id when ``job_id`` is ``None``. A job
    with a ``key`` may wait behind its key's first job (see :mod:`.flow`): found there too."""
    if key:
        return flow.change_priority(topic, job_id, priority, entity_id, client)
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.queue, k.entities, k.scheduled, k.schedprio]
    args: list[str | int] = [job_id or "", entity_id or "", int(priority)]
    changed = script(r, "change_priority")(keys=keys, args=args, client=r if client is None else client)
    return _s(changed) if changed else None


def position(topic: str, job_id: str) -> int | None:
    """0-based rank in the queue (0 runs next), or ``None`` if not queued."""
    k = topic_keys(topic)
    r = get_redis()
    rank, _length = script(r, "position")(keys=[k.queue], args=[str(job_id)], client=r)
    if rank < 0:  # perhaps waiting behind its key's head: see flow_position.lua
        return flow.position(topic, str(job_id))[0]
    return int(rank)


def promote_due(topic: str, limit: int = 1000, now_ms: int | None = None) -> list[str]:
    """Move due scheduled ids into the queue (a keyed one of a topic taking turns behind its
    key's job: see ``promote.lua``); returns the promoted ids."""
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.scheduled, k.schedprio, k.queue, k.seq, k.wake, k.heads, k.keyof, k.keyqueue]
    return [_s(i) for i in script(r, "promote")(keys=keys, args=[limit, _now_arg(now_ms)], client=r)]


def queue_ids(topic: str) -> list[str]:
    """The queued ids in pop order."""
    return [_s(i) for i in get_redis().zrange(topic_keys(topic).queue, 0, -1)]


def depths(topic: str) -> dict[str, int]:
    """Sizes of a topic's Redis structures: queued, leased (running) and scheduled."""
    k = topic_keys(topic)
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.zcard(k.queue)
        pipe.zcard(k.leases)
        pipe.zcard(k.scheduled)
        pipe.zcard(k.keyqueue)
        queued, leased, scheduled, behind = pipe.execute()
    queued += behind  # keyed jobs waiting behind their key's (see flow.py) are queued too
    return {"queued": queued, "leased": leased, "scheduled": scheduled}


_wait_turn = 0


def wait_for_push(topics: list[str], timeout: float) -> None:
    """Block until a push to one of ``topics`` (a ``BLPOP`` on their wake lists), or ``timeout``.

    On a Redis Cluster one ``BLPOP`` may only name keys of one slot, so the topics are
    grouped by slot and each call blocks on the next group in turn, for its share of
    ``timeout``: a push to a topic of another group is seen within that share.
    """
    if not topics:
        return
    r = get_redis()
    keys = [topic_keys(t).wake for t in topics]
    if is_cluster(r):
        global _wait_turn
        groups: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            groups[r.keyslot(key)].append(key)  # type: ignore[attr-defined]
        ordered = [groups[slot] for slot in sorted(groups)]
        _wait_turn = (_wait_turn + 1) % len(ordered)
        keys = ordered[_wait_turn]
        timeout = timeout / len(ordered)
    r.blpop(keys, timeout=_blocking_timeout(r, timeout))


def _blocking_timeout(r: Any, timeout: float) -> float:
    """``timeout`` for a blocking call on ``r``: at least 0.05 s, and short enough to
    return before the client's socket gives up on it."""
    if is_cluster(r):
        socket_timeout = r.get_connection_kwargs().get("socket_timeout")
    else:
        socket_timeout = r.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        timeout = min(timeout, socket_timeout * 0.8)
    return max(0.05, timeout)


def wait_and_pop(topic: str, count: int, slot_token: str, timeout: float) -> list[str]:
    """:func:`wait_for_push` on ``topic``, then lease up to ``count`` of its ids as
    :func:`pop` does, in one round trip: the pop is pipelined behind the ``BLPOP``, and
    Redis runs it the moment the ``BLPOP`` returns (woken or timed out). For a topic
    without flow options; on a Redis Cluster this waits only, and leases nothing."""
    r = get_redis()
    if is_cluster(r):
        wait_for_push([topic], timeout)
        return []
    keys, args = _ack_pop_call(topic, [], max(1, int(count)), None, None, slot_token)
    try:
        # On the thread's own connection, its two answers read with nothing around them (a
        # woken worker's next step is its claim). The pop is sent by SHA, without redis-py's
        # script check (a round trip per call): a script Redis lost (it restarted) is
        # answered NOSCRIPT, and the pop is then made apart.
        _woken, ids = sending.call(r, ("BLPOP", topic_keys(topic).wake, _blocking_timeout(r, timeout)),
                                   ("EVALSHA", script(r, "ack_pop").sha, len(keys), *keys, *args))
    except redis.exceptions.NoScriptError:
        return acks_and_pop(topic, [], count, slot_token=slot_token)
    return [_s(i) for i in ids]


def set_paused(topic: str, paused: bool) -> None:
    k = topic_keys(topic)
    if paused:
        get_redis().set(k.paused, "1")
    else:
        get_redis().delete(k.paused)


def is_paused(topic: str) -> bool:
    return bool(get_redis().exists(topic_keys(topic).paused))


def request_abort(topic: str, job_id: str, client: Any = None) -> None:
    (get_redis() if client is None else client).sadd(topic_keys(topic).abort, str(job_id))


def abort_requested(topic: str, job_id: str) -> bool:
    return bool(get_redis().sismember(topic_keys(topic).abort, str(job_id)))


def aborts_requested(topic: str, job_ids: Iterable[str]) -> list[str]:
    """Which of ``job_ids`` have a cancel request (one call)."""
    ids = [str(i) for i in job_ids]
    if not ids:
        return []
    asked = get_redis().smismember(topic_keys(topic).abort, ids)
    return [job_id for job_id, yes in zip(ids, asked, strict=True) if yes]


def known_topics() -> list[str]:
    return sorted(_s(t) for t in get_redis().smembers(topics_key()))
