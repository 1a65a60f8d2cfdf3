"""Each topic's counters and histograms, kept in Redis for the Prometheus metrics.

They cost the worker no round trip: a transition hands a *tally*, a short string such
as ``"succeeded=1 wait:0.1=1 wait:us=42000 run:1=1 run:us=380000"``, to the Lua script
it calls anyway (push, schedule, ack, ack_pop), and the script adds each amount to a
field of the topic's ``metrics`` hash (``HINCRBY``: every field is an integer). The hash carries the
topic's hash tag, like every key of the topic. A scrape reads every topic's hash, queue
sizes and queue heads with one pipeline per batch of topics (:func:`read`).

Counters count events since the hash was built: ``enqueued`` (jobs created),
``succeeded``, ``failed`` (jobs that ended failed, a lost last attempt included),
``retried`` (attempts scheduled again) and ``lost`` (attempts whose lease expired).
A histogram ``name`` keeps one field per bucket, ``name:<upper bound>`` (not
cumulative: each observation adds to one bucket) and its sum in microseconds, ``name:us``. ``wait`` is the
time from being queued (or due) to starting, ``run`` the time from starting to the
attempt's end; both are observed when an attempt ends (a lost attempt has no run time).

After Redis lost the hash (a flush), ``resync()`` rebuilds it from the jobs and
executions tables (:func:`jobqueue.resync.counted`: a tally of the finished rows, kept in
the database, and the rows since) and stamps it with :data:`SINCE`.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import redis

from .connection import get_redis, is_cluster
from .keys import topic_keys, workers_key
from .queue import _s
from .scripts import script

#: Upper bounds (seconds) of the buckets of both histograms; a last bucket, +Inf, holds the rest.
BUCKETS = (0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Bucket labels as they appear in field names (``run:2.5``), the +Inf bucket last.
LABELS = (*(format(bound, "g") for bound in BUCKETS), "+Inf")
#: The counters, each a field of a topic's metrics hash.
COUNTERS = ("enqueued", "succeeded", "failed", "retried", "lost")
#: The histograms: time waiting in the queue, time running.
HISTOGRAMS = ("wait", "run")
#: The field holding when the hash was last rebuilt from the database (epoch seconds).
SINCE = "since"
#: Topics read per pipeline by :func:`read`.
READ_BATCH = 250
#: Priorities per topic whose queue head :func:`read` returns (see ``scrape_topic.lua``).
MAX_HEADS = 32


def field_names() -> list[str]:
    """Every field of a metrics hash but :data:`SINCE`."""
    return [*COUNTERS, *(f"{name}:{part}" for name in HISTOGRAMS for part in (*LABELS, "us"))]


#: A metrics hash's field names as Redis may return them (bytes, or str) -> as str.
_FIELD_NAMES: dict[Any, str] = {form: name for name in [*field_names(), SINCE] for form in (name, name.encode())}


def observe(name: str, seconds: float) -> str:
    """The tally of one observation of histogram ``name``."""
    seconds = max(0.0, seconds)
    return f"{name}:{LABELS[bisect_left(BUCKETS, seconds)]}=1 {name}:us={round(seconds * 1e6)}"


def tally(*counters: str, wait: float | None = None, run: float | None = None) -> str:
    """The tally of one event: ``counters`` each counted once, and the observed times."""
    parts = [f"{counter}=1" for counter in counters]
    if wait is not None:
        parts.append(observe("wait", wait))
    if run is not None:
        parts.append(observe("run", run))
    return " ".join(parts)


@dataclass
class Histogram:
    """Cumulative bucket counts in :data:`BUCKETS` order, +Inf last, and the sum."""

    buckets: list[float]
    sum: float

    @property
    def count(self) -> float:
        return self.buckets[-1]


@dataclass
class TopicReading:
    """What Redis holds about one topic at one moment."""

    queued: int
    scheduled: int
    running: int
    counters: dict[str, float]
    histograms: dict[str, Histogram]
    heads: list[str] = field(default_factory=list)
    since: float | None = None


def histograms(fields: dict[str, float]) -> dict[str, Histogram]:
    """The histograms of a metrics hash's fields, buckets made cumulative."""
    out = {}
    for name in HISTOGRAMS:
        running, buckets = 0.0, []
        for label in LABELS:
            running += fields.get(f"{name}:{label}", 0.0)
            buckets.append(running)
        out[name] = Histogram(buckets, fields.get(f"{name}:us", 0.0) / 1e6)
    return out


@dataclass
class Reading:
    """One scrape's worth of Redis: every topic's :class:`TopicReading`, and the worker
    registry's records, each with ``age``, seconds since its last beat."""

    topics: dict[str, TopicReading]
    workers: list[dict[str, Any]]


def read(topics: list[str], max_heads: int = MAX_HEADS) -> dict[str, TopicReading]:
    """Every topic's queue sizes, metrics hash and queue heads (see :func:`scrape`)."""
    return scrape(topics, max_heads).topics


def scrape(topics: list[str], max_heads: int = MAX_HEADS) -> Reading:
    """Every topic's queue sizes, metrics hash and queue heads, and the worker registry:
    one round trip per :data:`READ_BATCH` topics (the script goes by its SHA, and is loaded
    only if Redis lacks it). The registry is read as it stands, never pruned."""
    r = get_redis()
    one_topic = script(r, "scrape_topic")
    cluster = is_cluster(r)
    out: dict[str, TopicReading] = {}
    workers: list[dict[str, Any]] = []
    for start in range(0, max(len(topics), 1), READ_BATCH):
        batch = topics[start : start + READ_BATCH]
        for attempt in range(2):
            with r.pipeline(transaction=False) as pipe:
                if start == 0:
                    pipe.hgetall(workers_key())
                for topic in batch:
                    k = topic_keys(topic)
                    if cluster:  # a cluster's pipeline sends the script's text (see LuaScript)
                        one_topic(keys=[k.queue, k.scheduled, k.leases, k.metrics], args=[max_heads], client=pipe)
                    else:
                        pipe.evalsha(one_topic.sha, 4, k.queue, k.scheduled, k.leases, k.metrics, max_heads)
                replies = pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
                r.script_load(one_topic.script)
                continue
            break
        for error in (reply for reply in replies if isinstance(reply, Exception)):
            raise error
        if start == 0:
            workers = _beats(replies.pop(0))
        for topic, (queued, scheduled, running, flat, ids) in zip(batch, replies, strict=True):
            pairs = zip(flat[::2], flat[1::2], strict=True)
            fields = {_FIELD_NAMES.get(key, key): float(value) for key, value in pairs}
            since = fields.pop(SINCE, None)
            out[topic] = TopicReading(
                queued=queued, scheduled=scheduled, running=running,
                counters={name: fields.get(name, 0.0) for name in COUNTERS},
                histograms=histograms(fields), heads=[_s(i) for i in ids], since=since,
            )
    return Reading(out, workers)


def _beats(registry: dict[Any, Any]) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for key, raw in registry.items():
        try:
            record = json.loads(_s(raw))
        except ValueError:
            continue
        if isinstance(record, dict):
            record.update(id=_s(key), age=now - float(record.get("beat", 0)))
            out.append(record)
    return out


def unbuilt(topics: list[str]) -> list[str]:
    """The topics whose metrics hash was never built from the database (or was lost)."""
    if not topics:
        return []
    with get_redis().pipeline(transaction=False) as pipe:
        for topic in topics:
            pipe.hexists(topic_keys(topic).metrics, SINCE)
        built = pipe.execute()
    return [topic for topic, ok in zip(topics, built, strict=True) if not ok]




def replace(values: dict[str, dict[str, int]], since: float | None = None) -> None:
    """Overwrite the metrics hash of each topic in ``values`` with the fields given
    (counters and non-cumulative buckets, as counted from the database; a field not
    given is zero), stamped with :data:`SINCE`; one pipeline for all."""
    stamp = time.time() if since is None else since
    with get_redis().pipeline(transaction=False) as pipe:
        for topic, fields in values.items():
            mapping: dict[Any, Any] = dict.fromkeys(field_names(), 0)
            mapping.update(fields)
            mapping[SINCE] = stamp
            pipe.hset(topic_keys(topic).metrics, mapping=mapping)
        pipe.execute()
