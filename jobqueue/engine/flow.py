"""Flow control: a topic's rate limit, its limit of running jobs per job key, and turns
between keys. The Lua side is ``flow_pop.lua`` (whose header explains the algorithms),
``push_flow.lua``, ``flow_remove.lua``, ``flow_repair.lua`` and ``flow_position.lua``.

A topic without flow options never reaches this module's scripts: :func:`limits` returns
``None`` and :mod:`.queue` uses its plain scripts, with no extra call. The options of the
topics a process deals with are given to :func:`configure` (by the worker from the Topic
rows it refreshes, and by ``enqueue()`` from the row it resolves).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..conf import settings
from .connection import get_redis, is_cluster
from .keys import topic_keys
from .scripts import script

#: Seconds per rate period unit.
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*(?::\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class Rate:
    """``count`` job starts per ``period`` seconds, at most ``burst`` of them at once."""

    count: int
    period: float
    burst: int = 1

    @property
    def interval_ms(self) -> float:
        """The emission interval: milliseconds between two starts at the steady rate."""
        return self.period * 1000.0 / self.count

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s" + (f":{self.burst}" if self.burst != 1 else "")


@lru_cache(maxsize=256)
def parse_rate(text: str) -> Rate | None:
    """``"100/m"``, ``"5/s"``, ``"1000/h"``, ``"10/30s"`` (10 per 30 seconds), each with an
    optional burst after a colon (``"100/m:10"``: up to 10 at once, 100 a minute on
    average). The burst defaults to 1: starts are spread evenly over the period.
    ``""`` means no limit (``None``). Raises :class:`ValueError` otherwise."""
    if not text or not text.strip():
        return None
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(f"Invalid rate {text!r}: use e.g. '100/m', '5/s', '1000/h' or '100/m:10' (a burst of 10).")
    count, multiple, unit, burst = match.groups()
    rate = Rate(int(count), PERIODS[unit] * int(multiple or 1), int(burst) if burst else 1)
    if rate.count < 1 or rate.burst < 1:
        raise ValueError(f"Invalid rate {text!r}: the count and the burst must be at least 1.")
    return rate


@dataclass(frozen=True)
class FlowLimits:
    """A topic's flow options (see :class:`jobqueue.models.Topic`)."""

    rate: Rate | None = None
    key_concurrency: int | None = None
    fair: bool = False

    @property
    def takes_turns(self) -> bool:
        """Whether keyed jobs wait in per-key sub-queues and take turns."""
        return self.fair or self.key_concurrency is not None

    def as_dict(self) -> dict[str, Any]:
        rate = self.rate
        return {
            "rate": None if rate is None else {"count": rate.count, "period": rate.period, "burst": rate.burst},
            "key_concurrency": self.key_concurrency,
            "fair": self.takes_turns,
        }


_limits: dict[str, FlowLimits] = {}
_blocked_until: dict[str, float] = {}


def configure(topic: str, limits: FlowLimits | None) -> None:
    """Set the flow options this process applies to ``topic`` (``None``: none)."""
    if limits is None or (limits.rate is None and not limits.takes_turns):
        _limits.pop(topic, None)
    else:
        _limits[topic] = limits


def limits(topic: str) -> FlowLimits | None:
    """The flow options of ``topic`` (``None`` when it has none)."""
    return _limits.get(topic)


def takes_turns(topic: str) -> bool:
    lim = _limits.get(topic)
    return lim is not None and lim.takes_turns


def wait_seconds(topic: str) -> float:
    """Seconds until ``topic`` is worth asking again (its last pop was rate limited); 0 if
    now. A pop that found every waiting key full says 0: the end of a running keyed job's
    lease pushes to the topic's wake list, which an idle worker blocks on (at most its
    idle wait) as for a push."""
    until = _blocked_until.get(topic)
    if until is None:
        return 0.0
    left = until - time.monotonic()
    if left <= 0:
        _blocked_until.pop(topic, None)
        return 0.0
    return left


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pop(topic: str, lim: FlowLimits, count: int, lease_seconds: float | None = None, now_ms: int | None = None,
        slot_token: str | None = None, ack: tuple[str, str, str] | None = None) -> list[str]:
    """Lease up to ``count`` ids within the topic's limits (``flow_pop.lua``), first
    acknowledging ``ack`` = ``(job id, entity id, tally)`` if given. When nothing could be
    leased for the rate limit, :func:`wait_seconds` says how long to leave the topic alone."""
    k = topic_keys(topic)
    lease = settings.LEASE_SECONDS if lease_seconds is None else lease_seconds
    r = get_redis()
    keys = [k.queue, k.leases, k.paused, k.lock, k.seq, k.rate, k.heads, k.keyof, k.keyqueue, k.keyrun, k.entities,
            k.abort, k.metrics, k.keyfull, k.wake]
    rate = lim.rate
    args: list[Any] = [
        lease, count, "" if now_ms is None else str(int(now_ms)), slot_token or "",
        "" if rate is None else repr(rate.interval_ms), 1 if rate is None else rate.burst,
        "" if lim.key_concurrency is None else lim.key_concurrency,
        *(ack or ("", "", "")),
    ]
    wait, *ids = script(r, "flow_pop")(keys=keys, args=args, client=r)
    if int(wait) > 0:
        _blocked_until[topic] = time.monotonic() + int(wait) / 1000.0
    else:
        _blocked_until.pop(topic, None)
    return [_s(i) for i in ids]


def push(topic: str, items: Sequence[tuple[str, int, str | None, str | None]], client: Any = None,
         tally: str = "") -> int:
    """Queue ``(job_id, priority, entity_id, key)`` items, keyed ones behind their key's
    head (``push_flow.lua``); returns how many were added."""
    k = topic_keys(topic)
    r = client if client is not None else get_redis()
    argv: list[Any] = [tally]
    for job_id, priority, entity, key in items:
        argv += [str(job_id), int(priority), entity or "", key or ""]
    keys = [k.queue, k.seq, k.entities, k.leases, k.scheduled, k.schedprio, k.wake, k.metrics, k.heads, k.keyof,
            k.keyqueue]
    result = script(get_redis(), "push_flow")(keys=keys, args=argv, client=r)
    return result if isinstance(result, int) else 0


def remove(topic: str, job_id: str, entity_id: str | None = None, client: Any = None) -> bool:
    """Drop a keyed job from its topic, letting its key's next job into the queue."""
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.queue, k.leases, k.entities, k.scheduled, k.schedprio, k.heads, k.keyof, k.seq, k.keyqueue, k.keyfull,
            k.wake]
    args = [str(job_id), entity_id or ""]
    return bool(script(r, "flow_remove")(keys=keys, args=args, client=r if client is None else client))


def repair(topic: str, flatten: bool = False) -> int:
    """Give every key whose head left the queue its next job; with ``flatten`` (the topic
    no longer takes turns) merge every sub-queue back into the queue."""
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.queue, k.seq, k.heads, k.keyof, k.wake, k.keyqueue]
    return int(script(r, "flow_repair")(keys=keys, args=["1" if flatten else ""], client=r))


def position(topic: str, job_id: str) -> tuple[int | None, int]:
    """``(position, queued)``: see ``flow_position.lua`` for what position means here."""
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.queue, k.heads, k.keyof, k.keyqueue]
    rank, total = script(r, "flow_position")(keys=keys, args=[job_id], client=r)
    return (None if int(rank) < 0 else int(rank)), int(total)


def restore_bucket(topic: str, starts_ms: Sequence[float]) -> bool:
    """Rebuild a rate-limited topic's bucket from the job starts the database recorded
    (ms since the epoch, those within one burst's time are enough), unless its state is
    still in Redis: after Redis lost it (a flush, a restart, a failover), the starts just
    before the loss still count, so no second burst gets through; a topic that started
    nothing lately is not held back. Whether it set the state."""
    lim = _limits.get(topic)
    if lim is None or lim.rate is None or not starts_ms:
        return False
    interval = lim.rate.interval_ms
    tat = 0.0
    for start in sorted(starts_ms):  # what flow_pop.lua did at each of them
        tat = max(tat, start) + interval
    k = topic_keys(topic)
    r = get_redis()
    seconds, micros = _server_time(r, k.rate)
    now = seconds * 1000 + micros // 1000
    if tat <= now:
        return False  # the bucket has refilled since
    return bool(r.set(k.rate, f"{tat:.17g}", px=math.ceil(tat - now) + 1000, nx=True))


def _server_time(r: Any, key: str) -> tuple[int, int]:
    """``TIME`` of the server that keeps ``key`` (a cluster's pipelines take no ``TIME``)."""
    if is_cluster(r):
        return r.time(target_nodes=r.get_node_from_key(key))
    return r.time()


def state(topic: str, now_ms: int | None = None, keys_shown: int = 20) -> dict[str, Any]:
    """What the topic's limits look like now, for the admin, the dashboard and the API:
    tokens left in the rate bucket, the keys waiting with their queued and running jobs."""
    lim = _limits.get(topic)
    k = topic_keys(topic)
    r = get_redis()
    with r.pipeline(transaction=False) as pipe:
        pipe.get(k.rate)
        pipe.hkeys(k.heads)
        tat_raw, head_keys = pipe.execute()
    seconds, micros = _server_time(r, k.rate)
    now = now_ms if now_ms is not None else seconds * 1000 + micros // 1000
    info: dict[str, Any] = lim.as_dict() if lim is not None else FlowLimits().as_dict()
    if lim is not None and lim.rate is not None:
        interval = lim.rate.interval_ms
        tat = max(float(tat_raw or 0), now)
        tokens = max(0, int(((lim.rate.burst - 1) * interval - (tat - now)) // interval) + 1)
        info["tokens"] = min(tokens, lim.rate.burst)
        info["next_token_ms"] = 0 if tokens else int(tat - (lim.rate.burst - 1) * interval - now)
    names = sorted(_s(h) for h in head_keys)
    info["keys_waiting"] = len(names)
    shown = []
    with r.pipeline(transaction=False) as pipe:
        for name in names[:keys_shown]:
            pipe.zlexcount(k.keyqueue, f"[{name}\t", f"({name}\n")
            pipe.zrangebylex(k.keyrun, f"[{name}\t", f"({name}\n")
        replies = pipe.execute() if names else []
    for i, name in enumerate(names[:keys_shown]):
        members = [_s(m)[len(name) + 1 :] for m in replies[2 * i + 1]]
        running = 0
        if members:
            running = sum(1 for score in r.zmscore(k.leases, members) if score is not None)
        shown.append({"key": name, "queued": replies[2 * i] + 1, "running": running})
    info["keys"] = shown
    return info


def queued_behind_keys(topic: str) -> int:
    """Jobs waiting behind their key's head (not in the queue's length)."""
    return int(get_redis().zcard(topic_keys(topic).keyqueue))


def waiting_behind_keys(topic: str) -> dict[str, str]:
    """``{job id: job key}`` of the jobs waiting behind their key's head."""
    return {job_id: key for job_id, (key, _priority) in waiting_behind(topic).items()}


def waiting_behind(topic: str) -> dict[str, tuple[str, int]]:
    """``{job id: (job key, priority)}`` of the jobs waiting behind their key's head (the
    priority their keyqueue entry's score encodes)."""
    from .queue import score_priority  # .queue imports this module

    found: dict[str, tuple[str, int]] = {}
    for member in map(_s, get_redis().zrange(topic_keys(topic).keyqueue, 0, -1)):
        key, _, rest = member.partition("\t")
        found[rest[14:]] = (key, score_priority(int(rest[:14], 16)))
    return found


def change_priority(topic: str, job_id: str | None, priority: int, entity_id: str | None = None,
                    client: Any = None) -> str | None:
    """Re-score a queued, scheduled or keyed waiting job (``flow_change_priority.lua``)."""
    k = topic_keys(topic)
    r = get_redis()
    keys = [k.queue, k.entities, k.scheduled, k.schedprio, k.heads, k.keyof, k.keyqueue]
    args: list[str | int] = [job_id or "", entity_id or "", int(priority)]
    changed = script(r, "flow_change_priority")(keys=keys, args=args, client=r if client is None else client)
    return _s(changed) if changed else None
