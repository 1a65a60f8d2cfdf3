"""One function per workload; each measures one run for the systems it compares.

Every measurement starts from a flushed Redis database and empty jobqueue tables
(:func:`reset`). Workers are subprocesses, stopped when the measurement ends.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from . import common, procs
from .procs import BenchError, Procs
from .systems import CELERY, JOBQUEUE, RQ_, durable_peers

#: Jobs in the latency run, and the gap between two enqueues (seconds).
LATENCY_JOBS = 200
LATENCY_GAP = 0.020
#: Warm-up jobs a worker runs before latency or memory is measured.
WARM_JOBS = 5
#: Seconds a scaling job sleeps, standing for a call to another service.
SCALING_SLEEP = 0.010


def reset() -> None:
    """Flush the benchmark's Redis database and empty jobqueue's job tables."""
    from django.db import connection

    from jobqueue.engine import get_redis
    from jobqueue.engine.queue import forget_announced
    from jobqueue.models import Execution, Job
    from jobqueue.topic_manager import clear_topic_cache

    from .peers import declare_celery_queue

    get_redis().flushdb()
    for peer in durable_peers():
        peer.reset()
    forget_announced()
    clear_topic_cache()
    tables = [Execution._meta.db_table, Job.depends_on.through._meta.db_table, Job._meta.db_table]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("TRUNCATE " + ", ".join(connection.ops.quote_name(t) for t in tables))
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {connection.ops.quote_name(table)}")
    declare_celery_queue()


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _marks() -> tuple[float | None, float | None]:
    r = common.client()
    return _float(r.get(common.FIRST_KEY)), _float(r.get(common.LAST_KEY))


# -- enqueue ------------------------------------------------------------------------------


def single_enqueue(n: int) -> dict[str, float]:
    """Jobs/s of ``n`` enqueue calls, one job each (jobqueue in autocommit: INSERT + push)."""
    out = {}
    for system in (JOBQUEUE, CELERY, RQ_, *durable_peers()):
        reset()
        for _ in range(20):  # connections, prepared scripts, cached topic rows
            system.enqueue("noop")
        start = time.perf_counter()
        for _ in range(n):
            system.enqueue("noop")
        out[system.key] = n / (time.perf_counter() - start)
    return out


def enqueue_floor(n: int) -> float | None:
    """Jobs/s of the least an enqueue that commits a job row, then tells Redis, costs here.

    One prepared ``INSERT`` of a job row in autocommit (its commit included) and one call of
    jobqueue's push script, with no Python around them: what ``enqueue()`` would cost if
    its own code took no time. PostgreSQL only (``None`` elsewhere).
    """
    import uuid

    from django.db import connection

    from jobqueue.engine import TopicKeys, get_redis
    from jobqueue.engine.scripts import script
    from jobqueue.models import Job
    from jobqueue.transitions import fastsql

    if connection.vendor != "postgresql":
        return None
    reset()
    job, _ = Job.objects.build("noop", {})
    params = fastsql._prep_row(Job, fastsql.JOB_FIELDS, job, connection)
    insert = fastsql.statement("insert_job", connection.alias)
    at = [f.attname for f in fastsql.JOB_FIELDS].index("id")
    r, k = get_redis(), TopicKeys("noop")
    keys = [k.queue, k.seq, k.entities, k.leases, k.scheduled, k.schedprio, k.wake, k.metrics]
    push = script(r, "push")
    with fastsql._cursor(connection) as cursor:
        def one() -> None:
            params[at] = uuid.uuid4()
            cursor.execute(insert, params)
            push(keys=keys, args=["enqueued=1", str(params[at]), 0, ""], client=r)

        for _ in range(20):
            one()
        start = time.perf_counter()
        for _ in range(n):
            one()
        return n / (time.perf_counter() - start)


def bulk_enqueue(n: int) -> dict[str, float]:
    """Jobs/s of one bulk call enqueueing ``n`` jobs (Celery has none)."""
    out = {}
    for system in (JOBQUEUE, RQ_):
        reset()
        system.bulk("noop", 10)()  # warm up
        call = system.bulk("noop", n)
        start = time.perf_counter()
        call()
        out[system.key] = n / (time.perf_counter() - start)
    return out


# -- drains -------------------------------------------------------------------------------


def drain_one(system: Any, topic: str, kind: str, n: int, notes: dict[str, Any]) -> float:
    """Fill the queue with ``n`` jobs, start one worker, return jobs/s from the first job's
    start to the last job's end (the worker's start-up is reported apart, in ``notes``)."""
    reset()
    system.fill(topic, n)
    timeout = max(120.0, n / 20)
    with Procs() as running:
        proc = running.start(f"{system.label} worker", system.worker(topic, kind, burst=True))
        if system is CELERY:
            procs.wait_for(lambda: common.client().exists(common.LAST_KEY), timeout, "the last job", [proc])
        else:
            code = proc.wait(timeout)
            if code:
                raise BenchError(f"{proc.name} exited with {code}:\n{proc.output()}")
        first, last = _marks()
        if first is None or last is None:
            raise BenchError(f"{proc.name}: the first or last job did not run:\n{proc.output()}")
        notes.setdefault("startup", {}).setdefault(f"{system.key}:{kind}", []).append(first - proc.started)
    system.check_drained(topic, n)
    return n / (last - first)


def drain_inline(n: int, notes: dict[str, Any]) -> dict[str, float]:
    return {s.key: drain_one(s, "noop", "inline", n, notes) for s in (JOBQUEUE, CELERY, RQ_, *durable_peers())}


def drain_process(n: int, notes: dict[str, Any]) -> dict[str, float]:
    return {s.key: drain_one(s, "noop_proc", "process", n, notes) for s in (JOBQUEUE, RQ_)}


# -- latency ------------------------------------------------------------------------------


def _warm_up(system: Any, topic: str, proc: procs.Proc) -> None:
    for _ in range(WARM_JOBS):
        system.enqueue(topic, mark="warm")
    procs.wait_for(lambda: int(common.client().get(common.WARM_KEY) or 0) >= WARM_JOBS, 120,
                   "the warm-up jobs", [proc])


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def latency_one(system: Any, jobs: int = LATENCY_JOBS) -> tuple[float, float, float]:
    """p50 and p99 of enqueue → handler start (ms), and p50 of the enqueue call alone."""
    reset()
    with Procs() as running:
        proc = running.start(f"{system.label} worker", system.worker("latency", "inline", burst=False))
        _warm_up(system, "latency", proc)
        time.sleep(0.5)  # let the worker settle into its idle wait
        sent: list[float] = []
        returned: list[float] = []
        start = time.perf_counter()
        for i in range(jobs):
            sent.append(time.time())
            system.enqueue("latency", index=i)
            returned.append(time.time())
            pause = start + (i + 1) * LATENCY_GAP - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        r = common.client()
        procs.wait_for(lambda: r.hlen(common.LATENCY_KEY) >= jobs, 60, "the latency jobs", [proc])
        started = {int(k): float(v) for k, v in r.hgetall(common.LATENCY_KEY).items()}
    latencies = [(started[i] - sent[i]) * 1000 for i in range(jobs)]
    calls = [(returned[i] - sent[i]) * 1000 for i in range(jobs)]
    return statistics.median(latencies), percentile(latencies, 99), statistics.median(calls)


def latency(_n: int) -> dict[str, tuple[float, float, float]]:
    return {s.key: latency_one(s) for s in (JOBQUEUE, CELERY, RQ_, *durable_peers())}


# -- scaling ------------------------------------------------------------------------------


def scaling_one(workers: int, n: int, sleep: float) -> float:
    """jobqueue jobs/s with ``workers`` burst workers on the ``scale`` topic (concurrency 2),
    from the first Execution's start to the last one's end."""
    from django.db.models import Max, Min

    from jobqueue.models import Execution

    reset()
    JOBQUEUE.fill("scale", n, marks=False, **({"sleep": sleep} if sleep else {}))
    with Procs() as running:
        started = [running.start(f"jobqueue worker {i + 1}", JOBQUEUE.worker("scale", "inline"))
                   for i in range(workers)]
        for proc in started:
            code = proc.wait(max(120.0, n / 10))
            if code:
                raise BenchError(f"{proc.name} exited with {code}:\n{proc.output()}")
    JOBQUEUE.check_drained("scale", n)
    executions = Execution.objects.filter(job__topic_id="scale")
    span = executions.aggregate(first=Min("started_at"), last=Max("finished_at"))
    return n / (span["last"] - span["first"]).total_seconds()


def scaling(n: int, sleep: float = SCALING_SLEEP) -> dict[str, tuple[float, float]]:
    return {"jobqueue": (scaling_one(1, n, sleep), scaling_one(2, n, sleep))}


# -- memory -------------------------------------------------------------------------------


def memory_one(system: Any, n: int) -> tuple[float, float, float]:
    """Worker RSS (MB) after warm-up, after ``n`` more jobs, and its peak."""
    reset()
    with Procs() as running:
        proc = running.start(f"{system.label} worker", system.worker("noop", "inline", burst=False))
        _warm_up(system, "noop", proc)
        before = proc.rss_mb()
        system.fill("noop", n)
        procs.wait_for(lambda: common.client().exists(common.LAST_KEY), max(600.0, n / 20), "the last job",
                       [proc], interval=0.5)
        after, peak = proc.rss_mb(), procs.read_rss_mb(proc.pid, "VmHWM")
    return before, after, peak


def memory(n: int, peers: bool = True) -> dict[str, tuple[float, float, float]]:
    systems = (JOBQUEUE, CELERY, RQ_) if peers else (JOBQUEUE,)
    return {s.key: memory_one(s, n) for s in systems}
