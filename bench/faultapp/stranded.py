"""Scenarios of jobs whose push to Redis never happened while Redis kept its data: the
enqueuing process could not reach Redis, or it was SIGKILLed between its commit and its
push. The workers run all along and are never restarted; their reconciliation must find
every such job and run it within its period.

``python -m bench.faultapp.stranded BATCH COUNT MS`` is the enqueuer that dies: it
enqueues COUNT jobs in one transaction and SIGKILLs itself in the first callback after
the commit, before the one that would push them. It prints the commit time and the ids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from . import analysis
from .lab import ROOT, Lab, Worker, poll
from .scenarios import Result, concurrency, enqueue_batch, finished, stop_workers, tally, wait_all

#: The enqueuer's Redis while it is cut off: nothing listens there, Redis itself runs on.
UNREACHABLE = "redis://127.0.0.1:1/0"
#: The stranded jobs' priority: ahead of the backlog, so their wait is the reconciliation's alone.
PRIORITY = 10


def enqueue_one_way(i: int, payload: dict[str, Any]) -> list[Any]:
    """Enqueue by the ``i``-th of the ways in: alone (in autocommit or a transaction),
    two at once, with an entity id, or due in a second."""
    from django.db import transaction

    from jobqueue.models import Job

    way = i % 5
    if way == 1:
        with transaction.atomic():
            return [Job.objects.enqueue("work", payload, priority=PRIORITY)]
    if way == 2:
        return Job.objects.enqueue_many([{"topic": "work", "payload": payload, "priority": PRIORITY}] * 2)
    if way == 3:
        return [Job.objects.enqueue("work", payload, priority=PRIORITY, entity_id=f"e-{payload['n']}")]
    if way == 4:
        return [Job.objects.enqueue("work", payload, priority=PRIORITY, delay=1)]
    return [Job.objects.enqueue("work", payload, priority=PRIORITY)]


def enqueue_then_die(batch: int, count: int, ms: float) -> None:
    import django

    django.setup()
    from django.db import transaction

    jobs: list[Any] = []

    def die() -> None:
        print(f"{time.time():.6f}", *(str(job.pk) for job in jobs), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    with transaction.atomic():
        transaction.on_commit(die)  # registered first, so it runs before the pushes enqueue() registers
        for i in range(count):
            jobs += enqueue_one_way(i, {"n": batch * 1000 + i, "ms": ms})


def reconciled(lab: Lab, result: Result, p: dict[str, Any], backlog: list[str], stranded: dict[str, float],
               workers: list[Worker], marks: list[int]) -> None:
    """Wait for everything, then check the stranded jobs' wait and the common counts.

    ``stranded`` maps each job to when it could have run had its push happened (its
    commit, or its due time); ``marks`` is how long each worker's log was before the
    fault (a worker rebuilds Redis at start, which is no answer to the fault)."""
    from jobqueue.models import Job

    ids = backlog + list(stranded)
    wait_all(lab, result, ["work"], len(ids), p["timeout"])
    period = p["reconcile"]
    bound = max(2 * period, period + 5)
    runs = analysis.read_runs(lab.run_dir)
    waits = [min(c.start for c in runs[j]) - since for j, since in stranded.items() if runs.get(j)]
    logs = [w.output()[mark:] for w, mark in zip(workers, marks, strict=True)]
    result.details.update(
        stranded=len(stranded), reconcile_seconds=period, bound_seconds=bound,
        max_wait_seconds=round(max(waits), 1) if waits else None,
        median_wait_seconds=round(sorted(waits)[len(waits) // 2], 1) if waits else None,
        workers_that_put_back=sum(1 for log in logs if "Put back" in log),
        worker_restarts=sum(1 for w in workers if not w.alive()),
        workers_that_rebuilt=sum(1 for log in logs if "Rebuilt Redis" in log or "Lost contact" in log),
    )
    if len(waits) < len(stranded):
        result.problems.append(f"{len(stranded) - len(waits)} stranded job(s) never ran")
    elif max(waits) > bound:
        result.problems.append(f"a stranded job waited {max(waits):.1f} s, over {bound} s")
    if result.details["worker_restarts"] or result.details["workers_that_rebuilt"]:
        result.problems.append("a worker died or rebuilt Redis: the jobs must be found by a running worker")
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs)
    result.max_concurrent = f"{concurrency(result, 'work', ids, runs, {}, 4)} (limit 4)"
    late = Job.objects.filter(pk__in=list(stranded), status="queued").count()
    if late:
        result.problems.append(f"{late} stranded job(s) still queued")


def _start(lab: Lab, p: dict[str, Any], prefix: str) -> tuple[list[str], list[Worker]]:
    """A backlog, and workers that are a third of the way through it."""
    backlog = enqueue_batch("work", p["jobs"], p["ms"])
    env = {"JOBQUEUE_FAULTS_RECONCILE_SECONDS": str(p["reconcile"])}
    workers = [lab.worker(f"{prefix}-{i}", ["work"], env=env) for i in range(p["workers"])]
    poll(lambda: finished(["work"]) >= len(backlog) // 3, p["timeout"])
    return backlog, workers


def _in_redis(client: Any, job_id: str) -> bool:
    from jobqueue.engine import TopicKeys

    k = TopicKeys("work")
    return any(client.zscore(key, job_id) is not None for key in (k.queue, k.leases, k.scheduled))


def enqueuer_cut(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """The enqueuer alone cannot reach Redis for a while; Redis and the workers run on."""
    from django.conf import settings
    from django.test.utils import override_settings

    from jobqueue.engine import get_redis, reset_clients

    result = Result("Redis unreachable for the enqueuer", size, "")
    lab.reset("enqueuer-cut")
    backlog, workers = _start(lab, p, "ec")
    marks = [len(w.output()) for w in workers]
    good = get_redis()
    stranded: dict[str, float] = {}
    began = time.monotonic()
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "REDIS_URL": UNREACHABLE}):
        reset_clients()
        for i in range(p["cut"]):
            for job in enqueue_one_way(i, {"n": -1 - i, "ms": p["ms"]}):
                due = job.run_after.timestamp() if job.run_after else 0.0
                stranded[str(job.pk)] = max(time.time(), due)
                if _in_redis(good, str(job.pk)):
                    result.problems.append(f"job {job.pk} reached Redis although its enqueuer could not")
    cut_seconds = time.monotonic() - began
    reset_clients()
    reconciled(lab, result, p, backlog, stranded, workers, marks)
    result.injected = (f"{len(stranded)} jobs committed in {cut_seconds:.1f} s while their enqueuer's Redis "
                       f"refused connections, 5 ways (of {len(backlog) + len(stranded)} jobs); workers never "
                       f"restarted, RECONCILE_SECONDS = {p['reconcile']}")
    return result


def enqueuer_killed(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """Enqueuing processes SIGKILLed between their commit and their push."""
    from jobqueue.models import Job

    result = Result("Enqueuer killed between commit and push", size, "")
    lab.reset("enqueuer-kill")
    backlog, workers = _start(lab, p, "ek")
    marks = [len(w.output()) for w in workers]
    argv = [sys.executable, "-m", "bench.faultapp.stranded"]
    children = [
        subprocess.Popen([*argv, str(batch), str(p["per_kill"]), str(p["ms"])], cwd=ROOT, env=lab.child_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for batch in range(1, p["kills"] + 1)
    ]
    stranded: dict[str, float] = {}
    killed = 0
    for child in children:
        out, err = child.communicate(timeout=120)
        killed += child.returncode == -signal.SIGKILL
        if child.returncode != -signal.SIGKILL or not out.strip():
            result.problems.append(f"an enqueuer was not killed after its commit ({child.returncode}): {err[-500:]}")
            continue
        committed, *ids = out.split()
        for job_id in ids:
            stranded[job_id] = float(committed)
    for pk, run_after in Job.objects.filter(pk__in=list(stranded), run_after__isnull=False).values_list(
        "pk", "run_after"
    ):
        stranded[str(pk)] = max(stranded[str(pk)], run_after.timestamp())
    result.details["enqueuers_killed"] = killed
    reconciled(lab, result, p, backlog, stranded, workers, marks)
    result.injected = (f"{killed} enqueuing processes SIGKILLed right after committing {len(stranded)} jobs, "
                       f"before pushing them (of {len(backlog) + len(stranded)} jobs); workers never restarted, "
                       f"RECONCILE_SECONDS = {p['reconcile']}")
    return result


if __name__ == "__main__":
    enqueue_then_die(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
