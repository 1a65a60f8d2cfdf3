"""One function per workload; each measures one run for the systems it compares.

Every measurement starts from a flushed Redis database and empty jobqueue tables
(:func:`reset`). Workers are subprocesses, stopped when the measurement ends.
"""

from __future__ import annotations

import datetime as dt
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
#: When the growth rows were created and finished (before every job a measurement makes).
GROWTH_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)


def reset(keep_rows: bool = False) -> None:
    """Flush the benchmark's Redis database and empty jobqueue's job tables (with
    ``keep_rows``, delete only the jobs not finished: the growth rows stay)."""
    from django.db import connection

    from jobqueue.engine import get_redis
    from jobqueue.engine.queue import forget_announced
    from jobqueue.models import Execution, Job, MetricsTally
    from jobqueue.topic_manager import clear_topic_cache

    from .peers import declare_celery_queue

    get_redis().flushdb()
    for peer in durable_peers():
        peer.reset()
    forget_announced()
    clear_topic_cache()
    tables = [Execution._meta.db_table, Job.depends_on.through._meta.db_table, Job._meta.db_table,
              MetricsTally._meta.db_table]
    if keep_rows:
        # The jobs a measurement made are the ones after the growth rows' creation time.
        Job.objects.filter(created_at__gt=GROWTH_EPOCH).delete()
        declare_celery_queue()
        return
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


class _Floor:
    """The least an enqueue's I/O costs here: one prepared ``INSERT`` of a job row in
    autocommit holding the job's lock (its commit, with the WAL flush, included; its
    answer waited for as ``enqueue()`` waits, see :mod:`jobqueue.transitions.spinwait`),
    and the push script's call sent on a held connection as soon as the ``INSERT`` is
    sent, its answer read while the ``INSERT`` commits (else before the next one's), as
    ``enqueue()`` does (:func:`jobqueue.transitions.create.insert_plain`,
    :mod:`jobqueue.engine.sending`); no Python around them. PostgreSQL only."""

    def __init__(self, topic: str) -> None:
        from django.db import connection

        from jobqueue.engine import TopicKeys, get_redis
        from jobqueue.engine.scripts import script
        from jobqueue.engine.sending import PUSH_KEYS
        from jobqueue.models import Job
        from jobqueue.transitions import fastsql

        job, _ = Job.objects.build(topic, {})
        self.connection = connection
        self.params = [*fastsql._prep_row(Job, fastsql.JOB_FIELDS, job, connection), *fastsql.lock_keys(job.pk)]
        self.at = [f.attname for f in fastsql.JOB_FIELDS].index("id")
        r, k = get_redis(), TopicKeys(topic)
        script(r, "push")(keys=[getattr(k, name) for name in PUSH_KEYS], args=[""], client=r)  # loaded
        self.redis = r
        self.conn = r.connection_pool.get_connection()
        head = [b"EVALSHA", script(r, "push").sha.encode(), b"8", *(getattr(k, n).encode() for n in PUSH_KEYS),
                b"enqueued=1"]
        self.packed = b"*15\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in head)
        self.unread = False

    def one(self, cursor: Any) -> str:
        """Write and push one job; returns its id."""
        from jobqueue.ids import new_job_id
        from jobqueue.transitions import fastsql

        self.params[self.at] = job_id = new_job_id()
        self.params[-1] = fastsql.lock_keys(job_id)[1]
        text = str(job_id)

        def push() -> None:
            if self.unread:
                self.conn.read_response()
            self.conn.send_packed_command([self.packed + b"$36\r\n%s\r\n$1\r\n0\r\n$0\r\n\r\n" % text.encode()])
            self.unread = True

        def read() -> None:
            self.conn.read_response()
            self.unread = False

        # Through the calls enqueue() sends its INSERT with (libpq's own, with its polling).
        fastsql._pushed_insert(cursor, "insert_job_pushed", self.params, self.connection, push,
                               lambda: (self.conn._sock.fileno(), read) if self.unread else None)
        return text

    def close(self) -> None:
        if self.unread:
            self.conn.read_response()
        self.redis.connection_pool.release(self.conn)


def enqueue_floor(n: int) -> float | None:
    """Jobs/s of the least an enqueue that commits a job row, then tells Redis, costs here
    (:class:`_Floor`): what ``enqueue()`` would cost if its own code took no time.
    PostgreSQL only (``None`` elsewhere)."""
    from django.db import connection

    from jobqueue.transitions import fastsql

    if connection.vendor != "postgresql":
        return None
    reset()
    floor = _Floor("noop")
    try:
        with fastsql._cursor(connection) as cursor:
            for _ in range(20):
                floor.one(cursor)
            start = time.perf_counter()
            for _ in range(n):
                floor.one(cursor)
            return n / (time.perf_counter() - start)
    finally:
        floor.close()


def latency_floor(_n: int) -> tuple[float, float] | None:
    """p50s (ms) of the least a job's way from enqueue to start costs here, jobs coming
    one at a time as in :func:`latency_one` (``LATENCY_JOBS`` of them ``LATENCY_GAP``
    apart), with no Python around the calls: the durable part of the enqueue alone
    (:class:`_Floor`'s row and push: a worker has not even been woken at its end), and
    the whole way, to the moment ``bench/floorworker.py`` has leased and claimed the job
    (one round trip to wake and lease, one with the prepared ``claim`` behind the wait for
    the row's commit). PostgreSQL only (``None`` elsewhere)."""
    from django.db import connection

    from jobqueue.transitions import fastsql

    from .floorworker import READY_KEY

    if connection.vendor != "postgresql":
        return None
    reset()
    r = common.client()
    floor = _Floor("latency")
    took: list[float] = []
    sent: dict[str, float] = {}
    with Procs() as running:
        proc = running.start("floor worker", procs.python(str(procs.ROOT / "bench" / "floorworker.py"), "latency"))
        procs.wait_for(lambda: r.get(READY_KEY), 60, "the floor worker", [proc])
        time.sleep(0.5)  # let it settle into its wait
        try:
            with fastsql._cursor(connection) as cursor:
                for i in range(LATENCY_JOBS + 20):  # the first 20 warm up
                    at, began = time.time(), time.perf_counter()
                    job_id = floor.one(cursor)
                    if i >= 20:
                        took.append((time.perf_counter() - began) * 1000)
                        sent[job_id] = at
                    time.sleep(LATENCY_GAP)
        finally:
            floor.close()
        procs.wait_for(lambda: r.hlen(common.LATENCY_KEY) >= LATENCY_JOBS + 20, 60, "the floor's jobs", [proc])
        started = {k.decode(): float(v) for k, v in r.hgetall(common.LATENCY_KEY).items()}
    return statistics.median(took), statistics.median([(started[j] - at) * 1000 for j, at in sent.items()])


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


def drain_one(system: Any, topic: str, kind: str, n: int, notes: dict[str, Any], keep_rows: bool = False) -> float:
    """Fill the queue with ``n`` jobs, start one worker, return jobs/s from the first job's
    start to the last job's end (the worker's start-up is reported apart, in ``notes``)."""
    reset(keep_rows)
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


def drain_floor(n: int) -> float | None:
    """Jobs/s of the least a worker that records every job durably costs here.

    The worker's database and Redis calls with no Python around them: per batch of 8
    jobs, one call of the script that acknowledges the last batch and leases the next,
    and one prepared statement that records the batch's successes with their Execution
    rows and claims the next batch, sent as the worker sends it (``fastsql._recorded``),
    in a session whose commits skip the WAL flush, as a worker's do by default. No
    handler, no job object built: what the drain would reach
    if the worker's own code took no time. PostgreSQL only (``None`` elsewhere).
    """

    from django.db import connection

    from jobqueue.conf import settings

    if connection.vendor != "postgresql":
        return None
    reset()
    JOBQUEUE.fill("noop", n, marks=False)
    # As a worker's session does by default, for this measurement only: the workloads after
    # it (an enqueue commits with the project's durability) run on the same connection.
    with connection.cursor() as cursor:
        cursor.execute(f"SET synchronous_commit TO {'ON' if settings.WORKER_SYNCHRONOUS_COMMIT else 'OFF'}")
    try:
        return _drain_floor(n)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def _drain_floor(n: int) -> float:
    import uuid

    from django.db import connection

    from jobqueue import engine
    from jobqueue.models import Execution
    from jobqueue.transitions import attempt, fastsql

    batch = 8
    running = engine.pop("noop", batch)
    claims = [attempt.claim(job_id, "floor", 0) for job_id in running]
    assert all(claims)
    job, execution = claims[0]
    execution.outcome, execution.finished_at = "succeeded", job.started_at
    # The statement's parameters, built once from one job: only the ids change per batch.
    success = [job.pk, job.attempts, None, job.started_at, job.started_at]
    logged = fastsql._prep_row(Execution, fastsql.EXECUTION_FIELDS, execution, connection)
    logged_id = [f.attname for f in fastsql.EXECUTION_FIELDS].index("job_id")
    claim = ["running", job.started_at, "floor", job.started_at, [], "queued", "scheduled"]
    tally = engine.tally("succeeded", wait=0.001, run=0.0)

    def params(done: list[str], following: list[str]) -> list:
        rows, executions = [], []
        for job_id in done:
            key = uuid.UUID(job_id)
            rows += [key, *success[1:]]
            executions += [*logged[:logged_id], key, *logged[logged_id + 1:]]
        claim[4] = [uuid.UUID(job_id) for job_id in following]
        return [*rows, "succeeded", "running", *executions, *claim]

    acknowledged: list[tuple[str, str, str]] = []
    count = 0
    start = time.perf_counter()
    while running:
        following = engine.acks_and_pop("noop", acknowledged, batch)
        rows = fastsql._recorded(len(running), params(running, following), connection)
        # Recorded, and the next batch claimed.
        assert len(rows[0][0]) == len(running) and len([r for r in rows if r[1] is not None]) == len(following)
        acknowledged = [(job_id, "", tally) for job_id in running]
        count += len(running)
        running = following
    engine.acks_and_pop("noop", acknowledged, 0)
    return count / (time.perf_counter() - start)


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


# -- growth -------------------------------------------------------------------------------


#: How :func:`fill_finished` makes the growth rows' ids: as ``enqueue()`` makes them
#: (:func:`jobqueue.ids.new_job_id`: version 7 UUIDs, from each job's creation time), or
#: random (version 4), as the rows of an installation older than those ids hold them.
GROWTH_IDS = {
    "ordered": """(lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
                   || substr(r, 1, 3) || substr('89ab', 1 + floor(random() * 4)::int, 1)
                   || substr(r, 4, 15))::uuid""",
    "random": "gen_random_uuid()",
}


def fill_finished(rows: int, topic: str = "noop", ids: str = "ordered") -> float:
    """Add ``rows`` succeeded jobs, each with its Execution, in one ``INSERT ... SELECT`` from
    ``generate_series`` (PostgreSQL), then ``VACUUM ANALYZE``; returns the seconds it took.
    ``ids``: a key of :data:`GROWTH_IDS`."""
    from django.db import connection

    from jobqueue.models import Execution, Job

    job, execution = Job._meta.db_table, Execution._meta.db_table
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"""
            WITH made AS (
                INSERT INTO {job} (id, status, priority, payload, error, progress, progress_message, stage,
                                   has_dependents, attempts, max_attempts, timeout, worker_id, created_at,
                                   updated_at, queued_at, started_at, finished_at, topic)
                SELECT {GROWTH_IDS[ids]},
                       'succeeded', 0, jsonb_build_object('i', i), '', 100, '', '', false, 1,
                       3, 3600, 'growth', t, t, t, t, t, %s
                FROM (SELECT i, %s::timestamptz - make_interval(secs => i) AS t, md5(random()::text) AS r
                      FROM generate_series(1, %s) AS i) AS g
                RETURNING id, finished_at
            )
            INSERT INTO {execution} (attempt, worker_id, hostname, pid, started_at, finished_at, outcome,
                                     stdout, stderr, error, traceback, duration, job_id, error_class)
            SELECT 1, 'growth', 'growth', 1, finished_at, finished_at, 'succeeded', '', '', '', '', 0.001, id, ''
            FROM made
        """, [topic, GROWTH_EPOCH, rows])
    previous = connection.connection.autocommit
    connection.connection.autocommit = True  # VACUUM runs outside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {job}, {execution}")
    finally:
        connection.connection.autocommit = previous
    return time.perf_counter() - start


def checkpoint() -> float:
    """Write every changed page out (``CHECKPOINT``) and return the seconds it took, so a
    measurement starts with none of the set-up's writes still pending: right after the
    fill, PostgreSQL's own checkpoints would write its gigabytes back during the measured
    runs, and the figure would show the fill, not the size of the tables. Needs a
    superuser or ``pg_checkpoint`` (PostgreSQL 15)."""
    from django.db import connection

    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
    return time.perf_counter() - start


def roll_up_all() -> float:
    """Add every finished row to the metrics tally, as the workers of a system that has run
    for a while have (else the measured worker would do it meanwhile); returns the seconds."""
    from jobqueue.resync import roll_up

    start = time.perf_counter()
    while roll_up():
        pass
    return time.perf_counter() - start


def jobqueue_enqueue_rate(n: int) -> float:
    """jobqueue's single-enqueue jobs/s (as :func:`single_enqueue`), keeping the growth rows."""
    reset(keep_rows=True)
    for _ in range(20):
        JOBQUEUE.enqueue("noop")
    start = time.perf_counter()
    for _ in range(n):
        JOBQUEUE.enqueue("noop")
    return n / (time.perf_counter() - start)


def growth(n: int, rows: int, runs: int, notes: dict[str, Any], ids: str = "ordered") -> dict[str, Any]:
    """jobqueue's single enqueue and inline drain on empty tables, then with ``rows``
    finished jobs (and their Executions, ids made as ``ids`` says: see :data:`GROWTH_IDS`)
    in them, then on empty tables again: ``runs`` of each. The empty-table figure is the
    median of the runs before the fill and after the rows are gone, so a machine whose
    speed drifts over the minutes the fill takes moves both figures alike. PostgreSQL only."""
    from django.db import connection

    if connection.vendor != "postgresql":
        raise BenchError("the growth rows are made with generate_series: PostgreSQL only")
    out: dict[str, Any] = {"rows": rows}
    reset()
    checkpoint()
    before = _enqueue_and_drain(n, runs, notes)
    reset()
    out["fill_seconds"] = fill_finished(rows, ids=ids)
    out["rollup_seconds"] = roll_up_all()
    out["checkpoint_seconds"] = checkpoint()
    full = _enqueue_and_drain(n, runs, notes)
    reset()
    checkpoint()
    after = _enqueue_and_drain(n, runs, notes)
    reset()
    out["runs"] = {"empty before": before, "full": full, "empty after": after}
    out["empty"] = {key: statistics.median(before[key] + after[key]) for key in before}
    out["full"] = {key: statistics.median(values) for key, values in full.items()}
    return out


def _enqueue_and_drain(n: int, runs: int, notes: dict[str, Any]) -> dict[str, list[float]]:
    enqueue = [jobqueue_enqueue_rate(n) for _ in range(runs)]
    drain = [drain_one(JOBQUEUE, "noop", "inline", n, notes, keep_rows=True) for _ in range(runs)]
    return {"enqueue": enqueue, "drain": drain}


def redis_bytes_per_job(jobs: int) -> dict[str, float]:
    """Redis ``used_memory`` growth per queued job, with ``jobs`` queued in one topic by
    ``enqueue_many`` (rows in the database too, as always)."""
    from jobqueue.engine import get_redis

    reset()
    r = get_redis()
    JOBQUEUE.enqueue("noop")  # the topic's keys exist before the first reading
    before = int(r.info("memory")["used_memory"])
    JOBQUEUE.fill("noop", jobs, marks=False)
    after = int(r.info("memory")["used_memory"])
    key = _queue_key("noop")
    queued = int((r.zcard(key) if r.type(key) == b"zset" else r.llen(key)) or 0)
    reset()
    return {"jobs": jobs, "queued": queued, "bytes_per_job": (after - before) / jobs}


def _queue_key(topic: str) -> str:
    from jobqueue.engine import TopicKeys

    return TopicKeys(topic).queue
