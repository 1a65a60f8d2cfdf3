"""Redis's side of reconciliation (``jobqueue.worker.reconcile`` walks the database):
whose turn it is to check a topic, where the last check stopped, and putting back jobs
whose push never reached Redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import flow
from .connection import get_redis
from .keys import topic_keys
from .queue import PUSH_CHUNK, _announce, _s
from .scripts import script


def reconcile_turns(topics: Iterable[str], seconds: float) -> list[str]:
    """The topics whose reconciliation turn this caller won: one per topic per ``seconds``,
    however many workers ask (one pipelined ``SET NX`` for all of them)."""
    names = list(topics)
    if not names:
        return []
    with get_redis().pipeline(transaction=False) as pipe:
        for topic in names:
            pipe.set(topic_keys(topic).reconcile_turn, "1", nx=True, px=max(1, int(seconds * 1000)))
        won = pipe.execute()
    return [topic for topic, ok in zip(names, won, strict=True) if ok]


def reconcile_cursors(topic: str) -> dict[str, str]:
    """Where the last reconciliation of ``topic`` stopped, by walk (``head``, ``sweep``)."""
    return {_s(k): _s(v) for k, v in get_redis().hgetall(topic_keys(topic).reconcile).items()}


def save_reconcile_cursors(topic: str, values: dict[str, str | None]) -> None:
    """Store walk positions; a ``None`` position is forgotten (the walk starts over)."""
    key = topic_keys(topic).reconcile
    with get_redis().pipeline(transaction=False) as pipe:
        for name, value in values.items():
            if value is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, value)
        pipe.execute()


def restore(topic: str, items: Iterable[tuple[str, int, str | None, float | None]],
            keys: Mapping[str, str] | None = None) -> list[str]:
    """Put back ``(job_id, priority, entity_id, due_epoch_seconds or None)`` items that Redis
    does not hold: ``None`` queues the job, a due time schedules it. An id already queued or
    leased (or scheduled) is left alone. Returns the ids put back. ``keys`` gives the job
    key of keyed items: on a topic that takes turns between keys such a job goes back
    behind its key's (see :mod:`.flow`), so its key's limit and turns hold.

    A pipelined ``ZMSCORE`` read sifts the items first, so the script (which holds Redis
    while it runs, and checks again) only sees the few that look missing."""
    k = topic_keys(topic)
    r = get_redis()
    items = list(items)
    with r.pipeline(transaction=False) as pipe:
        for start in range(0, len(items), PUSH_CHUNK):
            ids = [str(item[0]) for item in items[start : start + PUSH_CHUNK]]
            for key in (k.queue, k.leases, k.scheduled):
                pipe.zmscore(key, ids)
        found = pipe.execute()
    held: list[tuple[Any, ...]] = []  # (queue score, lease, due time) of each item, None where absent
    for start in range(0, len(found), 3):
        held += zip(found[start], found[start + 1], found[start + 2], strict=True)
    missing = [
        item for item, (queued, leased, scheduled) in zip(items, held, strict=True)
        if queued is None and leased is None and (item[3] is None or scheduled is None)
    ]
    if missing and r.exists(k.keyof):  # a keyed job waiting behind its key's head is held too (flow.py)
        tags = r.hmget(k.keyof, [str(item[0]) for item in missing])
        # "<key>\t<score>": queued behind its key (the script checks again); a bare "<key>" marks a scheduled job.
        missing = [item for item, tag in zip(missing, tags, strict=True) if tag is None or b"\t" not in tag]
    keyed = keys if keys and flow.takes_turns(topic) else {}
    restored: list[str] = []
    for start in range(0, len(missing), PUSH_CHUNK):
        argv: list[str | int] = []
        for job_id, priority, entity, due in missing[start : start + PUSH_CHUNK]:
            due_ms = "" if due is None else int(due * 1000)
            argv += [str(job_id), int(priority), entity or "", due_ms, keyed.get(str(job_id)) or ""]
        names = [k.queue, k.seq, k.entities, k.leases, k.scheduled, k.schedprio, k.wake, k.heads, k.keyof, k.keyqueue]
        restored += [_s(i) for i in script(r, "restore")(keys=names, args=argv, client=r)]
    if restored:
        _announce(topic, r)
    return restored
