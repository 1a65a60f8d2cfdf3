"""The three systems behind one small interface: enqueue, fill a queue, name a worker, check a drain.

Each system runs the same job body (:func:`bench.common.run`); ``topic`` names
jobqueue's topic and is ignored by the peers, which have one queue.
"""

from __future__ import annotations

from typing import Any

from . import procs
from .procs import BenchError

#: Jobs per enqueue_many() call (or pipeline) when a queue is filled before a measurement.
FILL_CHUNK = 10_000


def marked(n: int, i: int, marks: bool) -> dict[str, Any]:
    """The keyword arguments of job ``i`` of ``n``: the first and last carry a mark."""
    if not marks:
        return {}
    if i == n - 1:
        return {"mark": "last"}
    if i == 0:
        return {"mark": "first"}
    return {}


class JobQueue:
    key = "jobqueue"
    label = "jobqueue"

    def enqueue(self, topic: str, **kwargs: Any) -> None:
        from jobqueue.models import Job

        Job.objects.enqueue(topic, kwargs)

    def bulk(self, topic: str, n: int) -> Any:
        """Return a callable that enqueues ``n`` jobs in one call (built before timing)."""
        from jobqueue.models import Job

        items = [(topic, {}) for _ in range(n)]
        return lambda: Job.objects.enqueue_many(items)

    def fill(self, topic: str, n: int, marks: bool = True, **extra: Any) -> None:
        from jobqueue.models import Job

        for start in range(0, n, FILL_CHUNK):
            stop = min(n, start + FILL_CHUNK)
            Job.objects.enqueue_many([(topic, {**extra, **marked(n, i, marks)}) for i in range(start, stop)])

    def worker(self, topic: str, kind: str, burst: bool = True) -> list[str]:
        return procs.jobqueue_worker(topic, burst=burst)

    def check_drained(self, topic: str, n: int) -> None:
        """Every job succeeded and left its Execution row (growth rows not counted)."""
        from jobqueue.models import Execution, Job

        from .workloads import GROWTH_EPOCH

        done = Job.objects.filter(topic_id=topic, status="succeeded", created_at__gt=GROWTH_EPOCH).count()
        executions = Execution.objects.filter(job__topic_id=topic, outcome="succeeded",
                                              job__created_at__gt=GROWTH_EPOCH).count()
        if done != n or executions != n:
            raise BenchError(f"jobqueue: {done} jobs succeeded, {executions} executions; expected {n}")


class Celery:
    key = "celery"
    label = "Celery"

    def enqueue(self, topic: str, **kwargs: Any) -> None:
        from .peers import celery_noop

        celery_noop.delay(**kwargs)

    bulk = None  # Celery has no bulk enqueue (a group still sends one message per task)

    def fill(self, topic: str, n: int, marks: bool = True, **extra: Any) -> None:
        from .peers import app, celery_noop

        with app.producer_or_acquire() as producer:
            for i in range(n):
                celery_noop.apply_async(kwargs={**extra, **marked(n, i, marks)}, producer=producer)

    def worker(self, topic: str, kind: str, burst: bool = True) -> list[str]:
        if kind != "inline":
            raise BenchError("Celery has no per-job process isolation to compare with")
        return procs.celery_worker()  # no burst mode: the runner stops it

    def check_drained(self, topic: str, n: int) -> None:
        from . import common
        from .peers import QUEUE_NAME

        left = common.client().llen(QUEUE_NAME)
        if left:
            raise BenchError(f"Celery: {left} messages still in the queue")


class RQ:
    key = "rq"
    label = "RQ"

    def enqueue(self, topic: str, **kwargs: Any) -> None:
        from .peers import noop, rq_queue

        if not hasattr(self, "queue"):
            self.queue = rq_queue()
        self.queue.enqueue(noop, kwargs=kwargs)

    def bulk(self, topic: str, n: int) -> Any:
        from rq import Queue

        from .peers import noop, rq_queue

        queue = rq_queue()
        datas = [Queue.prepare_data(noop) for _ in range(n)]
        return lambda: queue.enqueue_many(datas)

    def fill(self, topic: str, n: int, marks: bool = True, **extra: Any) -> None:
        from rq import Queue

        from .peers import noop, rq_queue

        queue = rq_queue()
        for start in range(0, n, 1000):
            stop = min(n, start + 1000)
            queue.enqueue_many([
                Queue.prepare_data(noop, kwargs={**extra, **marked(n, i, marks)}) for i in range(start, stop)
            ])

    def worker(self, topic: str, kind: str, burst: bool = True) -> list[str]:
        return procs.rq_worker("simple" if kind == "inline" else "fork", burst=burst)

    def check_drained(self, topic: str, n: int) -> None:
        from .peers import rq_queue

        queue = rq_queue()
        finished, failed = queue.finished_job_registry.count, queue.failed_job_registry.count
        if queue.count or finished != n or failed:
            raise BenchError(f"RQ: {queue.count} queued, {finished} finished, {failed} failed; expected {n}")


class Procrastinate:
    """procrastinate through its Django integration: ``defer()`` writes a row in PostgreSQL,
    its worker (``manage.py procrastinate worker``, one job at a time) is woken by LISTEN/NOTIFY."""

    key = "procrastinate"
    label = "procrastinate"

    @staticmethod
    def available() -> bool:
        from .durable_peers import HAS_PROCRASTINATE

        return HAS_PROCRASTINATE

    def enqueue(self, topic: str, **kwargs: Any) -> None:
        from .durable_peers import procrastinate_noop

        procrastinate_noop.defer(**kwargs)

    def fill(self, topic: str, n: int, marks: bool = True, **extra: Any) -> None:
        from .durable_peers import procrastinate_noop

        for start in range(0, n, FILL_CHUNK):
            stop = min(n, start + FILL_CHUNK)
            procrastinate_noop.batch_defer(*({**extra, **marked(n, i, marks)} for i in range(start, stop)))

    def worker(self, topic: str, kind: str, burst: bool = True) -> list[str]:
        if kind != "inline":
            raise BenchError("procrastinate has no per-job process isolation to compare with")
        from .durable_peers import QUEUE_NAME

        argv = procs.python("-m", "django", "procrastinate", "worker", "--queues", QUEUE_NAME, "--concurrency", "1")
        return [*argv, "--one-shot"] if burst else argv

    def reset(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers "
                           "RESTART IDENTITY CASCADE")

    def check_drained(self, topic: str, n: int) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM procrastinate_jobs GROUP BY status")
            counts = dict(cursor.fetchall())
        if counts.get("succeeded") != n or len(counts) != 1:
            raise BenchError(f"procrastinate: jobs by status {counts}; expected {n} succeeded")


class TasksDB:
    """django-tasks' database backend (django-tasks-db): ``enqueue()`` saves a row with the
    ORM, ``manage.py db_worker`` polls for it (every 0.1 s when idle, a tenth of its default)."""

    key = "tasksdb"
    label = "django-tasks-db"
    #: The worker's idle poll interval (s). Its default is 1 s; a tenth is kinder to its latency.
    INTERVAL = "0.1"

    @staticmethod
    def available() -> bool:
        from .durable_peers import HAS_TASKS_DB

        return HAS_TASKS_DB

    def enqueue(self, topic: str, **kwargs: Any) -> None:
        from .durable_peers import tasks_db_noop

        tasks_db_noop.enqueue(**kwargs)

    def fill(self, topic: str, n: int, marks: bool = True, **extra: Any) -> None:
        from .durable_peers import tasks_db_noop

        for i in range(n):  # the backend has no bulk enqueue
            tasks_db_noop.enqueue(**extra, **marked(n, i, marks))

    def worker(self, topic: str, kind: str, burst: bool = True) -> list[str]:
        if kind != "inline":
            raise BenchError("django-tasks-db has no per-job process isolation to compare with")
        from .durable_peers import QUEUE_NAME

        argv = procs.python("-m", "django", "db_worker", "--backend", "db", "--queue-name", QUEUE_NAME,
                            "--interval", self.INTERVAL, "--no-startup-delay", "--no-reload")
        return [*argv, "--batch"] if burst else argv

    def reset(self) -> None:
        from django_tasks_db.models import DBTaskResult

        DBTaskResult.objects.all().delete()

    def check_drained(self, topic: str, n: int) -> None:
        from django.db.models import Count
        from django_tasks_db.models import DBTaskResult

        counts = dict(DBTaskResult.objects.values_list("status").annotate(n=Count("id")))
        if counts.get("SUCCESSFUL") != n or len(counts) != 1:
            raise BenchError(f"django-tasks-db: results by status {counts}; expected {n} successful")


JOBQUEUE, CELERY, RQ_ = JobQueue(), Celery(), RQ()
PROCRASTINATE, TASKS_DB = Procrastinate(), TasksDB()
SYSTEMS = {s.key: s for s in (JOBQUEUE, CELERY, RQ_, PROCRASTINATE, TASKS_DB)}
#: The columns of the report, in order: every system that may appear in a row.
COLUMNS = ("jobqueue", "celery", "rq", "procrastinate", "tasksdb")
LABELS = {s.key: s.label for s in SYSTEMS.values()}


def durable_peers() -> list[Any]:
    """The durable peers installed here (procrastinate needs PostgreSQL)."""
    return [s for s in (PROCRASTINATE, TASKS_DB) if s.available()]
