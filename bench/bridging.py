"""The Celery bridge's workload: Celery messages turned into jobs per second, on RabbitMQ
and on Redis, beside a Celery worker (``-P solo``) consuming as many messages itself.

Both read the same kind of message (``bench.noop``, sent with ``send_task()`` to a queue of
the benchmark's own, ``jqbench-bridge``). The bridge (``manage.py jobbridge celery --burst``)
is timed from the first job it builds to the last one (its start-up apart, like the
drains); the Celery worker from its first task's start to its last task's end.
RabbitMQ is ``JOBQUEUE_BENCH_AMQP_URL`` (``amqp://guest:guest@127.0.0.1:5672//``); the
Redis broker is the benchmark's Redis database.
"""

from __future__ import annotations

import os
from typing import Any

from . import common, procs
from .procs import BenchError, Procs
from .systems import marked
from .workloads import reset

AMQP_URL = os.environ.get("JOBQUEUE_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = "jqbench-bridge"
TASK = "bench.noop"


def brokers() -> dict[str, str]:
    from django.conf import settings

    return {"RabbitMQ": AMQP_URL, "Redis": settings.REDIS_URL}


def _queue() -> Any:
    from kombu import Exchange, Queue

    return Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)


def _empty(url: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        _queue()(conn.channel()).declare()
        _queue()(conn.channel()).purge()


def _publish(url: str, n: int, marks: bool) -> None:
    from celery import Celery

    app = Celery("bench-bridge", broker=url, set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(TASK, kwargs=marked(n, i, marks), producer=producer)
    app.close()


def bridge_rate(url: str, n: int) -> float:
    """Messages/s the bridge turns into committed jobs (acknowledged after their commit)."""
    from django.db.models import Max, Min

    from jobqueue.models import Job

    reset()
    _empty(url)
    _publish(url, n, marks=False)
    argv = procs.python("-m", "django", "jobbridge", "celery", "--broker", url, "--queue", QUEUE,
                        "--map", f"{TASK}=noop", "--burst")
    with Procs() as running:
        proc = running.start("jobbridge", argv)
        code = proc.wait(max(120.0, n / 100))
        if code:
            raise BenchError(f"jobbridge exited with {code}:\n{proc.output()}")
    made = Job.objects.filter(topic_id="noop")
    span = made.aggregate(first=Min("created_at"), last=Max("created_at"))
    if made.count() != n:
        raise BenchError(f"jobbridge made {made.count()} jobs of {n} messages:\n{proc.output()}")
    return n / (span["last"] - span["first"]).total_seconds()


def celery_rate(url: str, n: int) -> float:
    """Messages/s a Celery worker (``-P solo``) consumes and runs from the same broker."""
    reset()
    _empty(url)
    _publish(url, n, marks=True)
    saved = {k: os.environ.get(k) for k in ("JOBQUEUE_BENCH_CELERY_BROKER_URL", "JOBQUEUE_BENCH_CELERY_QUEUE")}
    os.environ.update(JOBQUEUE_BENCH_CELERY_BROKER_URL=url, JOBQUEUE_BENCH_CELERY_QUEUE=QUEUE)
    try:
        with Procs() as running:
            proc = running.start("Celery worker", procs.celery_worker())
            procs.wait_for(lambda: common.client().exists(common.LAST_KEY), max(120.0, n / 20), "the last task",
                           [proc])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    r = common.client()
    first, last = float(r.get(common.FIRST_KEY)), float(r.get(common.LAST_KEY))
    return n / (last - first)


def bridge(n: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, url in brokers().items():
        out[name] = {"jobqueue": bridge_rate(url, n), "celery": celery_rate(url, n)}
        _empty(url)
    return out
