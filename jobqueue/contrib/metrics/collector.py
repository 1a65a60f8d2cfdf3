"""A ``prometheus_client`` collector reading Redis and the database at each scrape.

Nothing is counted in the web process: the counters and histograms live in Redis,
kept by the transitions (:mod:`jobqueue.engine.metrics`), so the numbers are the
same whichever process answers and however many workers run on however many machines.
A scrape costs one Redis round trip per batch of topics (the first also reads the worker
registry) and two small queries (the topics with their waiting jobs, the queue heads' ages).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db import connections
from django.db.models import Count, Min, OuterRef, Subquery
from django.db.models.functions import Coalesce
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ...conf import settings
from ...engine import metrics
from ...models import Job, JobStatus, Topic

#: The counters, by field of the Redis hash: (metric name, help).
COUNTERS = {
    "enqueued": ("jobqueue_jobs_enqueued", "Jobs created."),
    "succeeded": ("jobqueue_jobs_succeeded", "Jobs that succeeded."),
    "failed": ("jobqueue_jobs_failed", "Jobs that failed for good (their last attempt failed or was lost)."),
    "retried": ("jobqueue_jobs_retried", "Failed attempts scheduled to run again."),
    "lost": ("jobqueue_jobs_lost", "Attempts lost with their worker (lease expired)."),
}
#: The histograms, by name in the Redis hash: (metric name, help).
HISTOGRAMS = {
    "wait": ("jobqueue_job_wait_seconds", "Time from being queued (or due) to starting, per attempt."),
    "run": ("jobqueue_job_run_seconds", "Time from starting to the end of the attempt."),
}
#: The gauges: metric name -> help.
GAUGES = {
    "jobqueue_jobs": "Jobs by status: queued, scheduled, running (leased), waiting (for dependencies).",
    "jobqueue_oldest_queued_job_age_seconds": "Age of the topic's longest-queued job (0 when none is queued).",
    "jobqueue_topic_workers": "Live workers holding a slot of the topic.",
    "jobqueue_workers": "Live workers (a heartbeat within WORKER_STALE_SECONDS).",
}
_HELP = {**GAUGES, **dict(COUNTERS.values()), **dict(HISTOGRAMS.values())}
_LE = [*(floatToGoString(bound) for bound in metrics.BUCKETS), "+Inf"]


def family_help(name: str) -> str:
    """The help text of a metric family (a counter's name with or without ``_total``)."""
    return _HELP[name.removesuffix("_total")]


@dataclass
class Snapshot:
    """Everything one scrape reports."""

    topics: dict[str, metrics.TopicReading]
    waiting: dict[str, int] = field(default_factory=dict)
    oldest_age: dict[str, float] = field(default_factory=dict)
    workers: int = 0
    topic_workers: dict[str, int] = field(default_factory=dict)


def gather() -> Snapshot:
    """Read Redis and the database once for every topic."""
    waiting = Job.objects.filter(topic=OuterRef("name"), status=JobStatus.WAITING).order_by().values("topic")
    rows = Topic.objects.order_by("name").values_list(
        "name", Subquery(waiting.annotate(n=Count("*")).values("n")))  # the (topic, status) index alone, per topic
    names = [name for name, _ in rows]
    reading = metrics.scrape(names)
    snapshot = Snapshot(topics=reading.topics, waiting={name: n for name, n in rows if n})
    heads = [pk for topic in snapshot.topics.values() for pk in map(_uuid, topic.heads) if pk is not None]
    if heads:
        now = time.time()
        snapshot.oldest_age = {topic: max(0.0, now - since.timestamp()) for topic, since in _queued_since(heads)}
    stale = settings.WORKER_STALE_SECONDS
    for beat in reading.workers:
        if beat["age"] > stale:
            continue
        snapshot.workers += 1
        for topic in beat.get("topics") or ():
            snapshot.topic_workers[topic] = snapshot.topic_workers.get(topic, 0) + 1
    return snapshot


def _queued_since(heads: list[uuid.UUID]) -> list[tuple[str, dt.datetime]]:
    """When the longest-queued of ``heads`` (the head of each priority's queue) was queued,
    per topic. On PostgreSQL the ids go as one array parameter: an ``IN`` list of some
    hundred ids cost more to build than to run."""
    found = Job.objects.filter(status=JobStatus.QUEUED)
    conn = connections[found.db]
    if conn.vendor != "postgresql":
        found = found.filter(pk__in=heads)
        return list(found.values_list("topic").annotate(since=Min(Coalesce("queued_at", "created_at"))).order_by())
    column = {f.name: conn.ops.quote_name(str(f.column)) for f in Job._meta.concrete_fields}
    table = conn.ops.quote_name(Job._meta.db_table)
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT {column['topic']}, MIN(COALESCE({column['queued_at']}, {column['created_at']})) FROM {table} "
            f"WHERE {column['id']} = ANY(%s) AND {column['status']} = %s GROUP BY {column['topic']}",
            [heads, JobStatus.QUEUED],
        )
        return cursor.fetchall()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def families(snapshot: Snapshot) -> Iterator[Metric]:
    """The metric families of a snapshot, each sample labelled with its topic."""
    jobs = GaugeMetricFamily("jobqueue_jobs", GAUGES["jobqueue_jobs"], labels=["topic", "status"])
    oldest = GaugeMetricFamily("jobqueue_oldest_queued_job_age_seconds",
                               GAUGES["jobqueue_oldest_queued_job_age_seconds"], labels=["topic"])
    counters = {key: CounterMetricFamily(name, text, labels=["topic"]) for key, (name, text) in COUNTERS.items()}
    histograms = {key: HistogramMetricFamily(name, text, labels=["topic"]) for key, (name, text) in HISTOGRAMS.items()}
    workers = GaugeMetricFamily("jobqueue_topic_workers", GAUGES["jobqueue_topic_workers"], labels=["topic"])
    for topic, reading in snapshot.topics.items():
        jobs.add_metric([topic, "queued"], reading.queued)
        jobs.add_metric([topic, "scheduled"], reading.scheduled)
        jobs.add_metric([topic, "running"], reading.running)
        jobs.add_metric([topic, "waiting"], snapshot.waiting.get(topic, 0))
        oldest.add_metric([topic], snapshot.oldest_age.get(topic, 0.0))
        for key, counter in counters.items():
            counter.add_metric([topic], reading.counters[key])
        for key, family in histograms.items():
            histogram = reading.histograms[key]
            family.add_metric([topic], list(zip(_LE, histogram.buckets, strict=True)), histogram.sum)
        workers.add_metric([topic], snapshot.topic_workers.get(topic, 0))
    yield jobs
    yield oldest
    yield from counters.values()
    yield from histograms.values()
    yield workers
    yield GaugeMetricFamily("jobqueue_workers", GAUGES["jobqueue_workers"], value=snapshot.workers)


class JobQueueCollector(Collector):
    """Every topic's metrics for a ``prometheus_client`` registry of your own (say, one
    served by another exporter). The view writes the same text faster
    (:mod:`.exposition`), without building a ``Metric`` object per sample."""

    def collect(self) -> Iterator[Metric]:
        return families(gather())

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not scrape Redis and the database
