"""The fault-injection scenarios. Each starts real ``jobworker`` processes against the
lab's own servers, injects one fault into the live run, waits for the work to end and
checks what came out of it against the database's rows and the handlers' own logs."""

from __future__ import annotations

import functools
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import analysis
from .lab import Lab, Worker, poll

FINISHED = ("succeeded", "failed", "cancelled")

#: Parameters of each scenario: ``small`` for the test suite, ``full`` for the published figures.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "small": {
        "kill9": {"jobs": 300, "workers": 2, "ms": 25, "timeout": 90},
        "redis-flush": {"jobs": 300, "workers": 2, "ms": 10, "timeout": 60},
        "redis-restart": {"jobs": 300, "workers": 2, "ms": 10, "during": 30, "timeout": 60},
        "pg-restart": {"jobs": 300, "workers": 2, "ms": 15, "timeout": 60},
        "contention": {"serial": 100, "trio": 150, "workers": 4, "ms": 5, "max_jobs": 60, "timeout": 90},
        "transactions": {"pairs": 200, "workers": 2, "timeout": 60},
        "slow": {"jobs": 1, "timeout": 60},
        "enqueuer-cut": {"jobs": 200, "cut": 20, "workers": 2, "ms": 5, "reconcile": 2, "timeout": 60},
        "enqueuer-kill": {"jobs": 200, "kills": 4, "per_kill": 5, "workers": 2, "ms": 5, "reconcile": 2,
                          "timeout": 60},
        "bridge-kill9": {"messages": 600, "kills": 2, "batch": 20, "workers": 2, "timeout": 90},
        "bridge-kill9-redis": {"messages": 600, "kills": 2, "batch": 20, "workers": 2, "timeout": 90},
        "redis-failover": {"jobs": 300, "workers": 3, "ms": 10, "tail": 5, "timeout": 90},
        "flow-kill9": {"jobs": 200, "keys": 6, "workers": 3, "ms": 20, "timeout": 120},
        "flow-redis-flush": {"jobs": 200, "keys": 6, "workers": 3, "ms": 10, "timeout": 120},
    },
    "full": {
        "kill9": {"jobs": 10000, "workers": 4, "ms": 3, "timeout": 300},
        "redis-flush": {"jobs": 5000, "workers": 4, "ms": 3, "timeout": 180},
        "redis-restart": {"jobs": 5000, "workers": 4, "ms": 3, "during": 200, "timeout": 180},
        "pg-restart": {"jobs": 3000, "workers": 4, "ms": 10, "timeout": 180},
        "contention": {"serial": 500, "trio": 1500, "workers": 8, "ms": 3, "max_jobs": 150, "timeout": 240},
        "transactions": {"pairs": 1000, "workers": 4, "timeout": 120},
        "slow": {"jobs": 3, "timeout": 120},
        # The default RECONCILE_SECONDS, so the figures are what an installation gets.
        "enqueuer-cut": {"jobs": 5000, "cut": 500, "workers": 4, "ms": 3, "reconcile": 15, "timeout": 180},
        "enqueuer-kill": {"jobs": 5000, "kills": 20, "per_kill": 10, "workers": 4, "ms": 3, "reconcile": 15,
                          "timeout": 180},
        "bridge-kill9": {"messages": 5000, "kills": 4, "batch": 100, "workers": 4, "timeout": 180},
        "bridge-kill9-redis": {"messages": 5000, "kills": 4, "batch": 100, "workers": 4, "timeout": 180},
        "redis-failover": {"jobs": 5000, "workers": 4, "ms": 3, "tail": 20, "timeout": 180},
        "flow-kill9": {"jobs": 1200, "keys": 8, "workers": 4, "ms": 10, "timeout": 240},
        "flow-redis-flush": {"jobs": 1200, "keys": 8, "workers": 4, "ms": 10, "timeout": 240},
    },
}


@dataclass
class Result:
    """What one scenario injected and what came out of it."""

    scenario: str
    size: str
    injected: str
    jobs: int = 0
    succeeded: int = 0
    lost: int = 0  # jobs that did not end as they should (missing, stuck, failed)
    executed_twice: int = 0  # jobs whose handler was called more than once
    twice_after_kill: bool | None = None  # every such job owes it to a killed worker (or ``twice_cause``)
    twice_cause: str = "a kill"
    lost_marked: str = "-"  # attempts cut by a kill whose Execution is marked lost / such attempts
    max_concurrent: str = "-"
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["ok"] = self.ok
        return out


# -- helpers ----------------------------------------------------------------------------


def enqueue_batch(topic: str, count: int, ms: float, start: int = 0) -> list[str]:
    from jobqueue.models import Job

    jobs = Job.objects.enqueue_many([(topic, {"n": start + i, "ms": ms}) for i in range(count)])
    return [str(j.pk) for j in jobs]


def finished(topics: list[str]) -> int:
    from jobqueue.models import Job

    return Job.objects.filter(topic_id__in=topics, status__in=FINISHED).count()


def wait_all(lab: Lab, result: Result, topics: list[str], expected: int, timeout: float,
             tick: Callable[[], None] | None = None) -> bool:
    done = poll(lambda: finished(topics) >= expected, timeout, tick=tick)
    if not done:
        lab.ensure_db()
        done_count = finished(topics)
        result.problems.append(f"timed out after {timeout:.0f}s: {done_count} of {expected} jobs finished")
    return bool(done)


def stop_workers(lab: Lab, result: Result) -> None:
    stuck = lab.stop_workers()
    if stuck:
        result.problems.append(f"{len(stuck)} worker(s) did not stop within 15 s of SIGTERM")


def worker_logs(workers: list[Worker], text: str) -> int:
    return sum(1 for w in workers if text in w.output())


def tally(result: Result, job_ids: list[str], runs: dict[str, list[analysis.Run]],
          killed_workers: set[str] = frozenset(), killed_at: dict[int, float] | None = None,  # type: ignore[assignment]
          retry_outcomes: tuple[str, ...] = ()) -> analysis.JobCheck:
    """Fill the common counts of ``result`` and note every inconsistency as a problem."""
    from jobqueue.models import Execution

    killed_at = killed_at or {}
    check = analysis.check_jobs(job_ids, runs, killed_workers, retry_outcomes)
    result.jobs = len(job_ids)
    result.succeeded = check.statuses.get("succeeded", 0)
    result.lost = result.jobs - result.succeeded
    result.executed_twice = check.executed_twice
    twice_ok = True
    for job in job_ids:
        calls = sorted(runs.get(job, []), key=lambda c: c.start)
        if len(calls) >= 2 and not retry_outcomes and not all(c.pid in killed_at for c in calls[:-1]):
            twice_ok = False
    twice_ok = twice_ok and not check.twice_not_after_kill
    result.twice_after_kill = twice_ok if check.executed_twice else None
    cut = [(c.job, c.attempt) for calls in runs.values() for c in calls
           if c.end is None and c.pid in killed_at]
    if cut:
        rows = Execution.objects.filter(job_id__in=[j for j, _ in cut], outcome="lost")
        lost = {(str(j), a) for j, a in rows.values_list("job_id", "attempt")}
        marked = sum(1 for item in cut if item in lost)
        result.lost_marked = f"{marked}/{len(cut)}"
        if marked != len(cut):
            result.problems.append(f"{len(cut) - marked} attempt(s) cut by a kill not marked lost")
    result.details.update(check.as_dict())
    if result.lost:
        result.problems.append(f"{result.lost} job(s) did not succeed: {dict(check.statuses)}")
    for name in ("unrecorded_attempts", "unmarked_lost", "ran_but_not_recorded", "twice_not_after_kill"):
        if getattr(check, name):
            result.problems.append(f"{name.replace('_', ' ')}: {getattr(check, name)}")
    if not twice_ok:
        result.problems.append("a job ran twice without a kill to explain it")
    result.problems += check.problems
    return check


def concurrency(result: Result, topic: str, job_ids: list[str], runs: dict[str, list[analysis.Run]],
                killed_at: dict[int, float], limit: int) -> int:
    seen = analysis.max_overlap(analysis.run_intervals(runs, killed_at, set(job_ids)))
    from_rows = analysis.execution_overlap(analysis.executions_of(job_ids))
    result.details[f"max_concurrent_{topic}"] = {"handlers": seen, "executions": from_rows, "limit": limit}
    worst = max(seen, from_rows)
    if worst > limit:
        result.problems.append(f"{topic}: {worst} ran at once, over its concurrency of {limit}")
    return worst


def start_workers(lab: Lab, prefix: str, count: int, topics: list[str], *args: str) -> list[Worker]:
    return [lab.worker(f"{prefix}-{i}", topics, *args) for i in range(count)]


# -- scenarios --------------------------------------------------------------------------


class RollingKills:
    """``workers`` workers of ``topics``; each :meth:`tick` (called while waiting) SIGKILLs
    a random one every 2 s and starts a new one in its place."""

    def __init__(self, lab: Lab, name: str, topics: list[str], workers: int):
        self.lab, self.name, self.topics = lab, name, topics
        self.slots = {i: lab.worker(f"{name}-{i}-0", topics) for i in range(workers)}
        self.generation = dict.fromkeys(self.slots, 0)
        self.killed: set[str] = set()
        self.killed_at: dict[int, float] = {}
        self.next_kill = time.monotonic() + 2.0

    def tick(self) -> None:
        if time.monotonic() < self.next_kill:
            return
        i = random.choice(list(self.slots))
        victim = self.slots[i]
        self.killed_at[victim.pid] = victim.kill9()
        self.killed.add(victim.worker_id)
        self.generation[i] += 1
        self.slots[i] = self.lab.worker(f"{self.name}-{i}-{self.generation[i]}", self.topics)
        self.next_kill += 2.0


def kill9(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """SIGKILL a random worker every 2 s and start a new one in its place."""
    result = Result("kill -9", size, f"SIGKILL 1 of {p['workers']} workers every 2 s, restarted")
    lab.reset("kill9")
    ids = enqueue_batch("work", p["jobs"], p["ms"])
    kills = RollingKills(lab, "k9", ["work"], p["workers"])

    def tick() -> None:
        for w in kills.slots.values():
            if not w.alive() and w.killed_at is None:
                result.problems.append(f"worker {w.worker_id} exited by itself: {w.output()[-500:]}")
                w.killed_at = 0.0
        kills.tick()

    wait_all(lab, result, ["work"], len(ids), p["timeout"], tick)
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs, kills.killed, kills.killed_at)
    result.max_concurrent = f"{concurrency(result, 'work', ids, runs, kills.killed_at, 4)} (limit 4)"
    result.details["kills"] = len(kills.killed)
    result.injected = f"{len(kills.killed)} × SIGKILL of 1 of {p['workers']} workers, every 2 s, restarted"
    return result


def redis_flush(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """FLUSHALL while the workers run; they notice the lost sentinel and rebuild Redis."""
    from jobqueue.engine import get_redis

    result = Result("Redis loses its data", size, "FLUSHALL mid-run")
    lab.reset("redis-flush")
    topics = ["work", "serial"]  # a topic of concurrency 1 too: its slot is lost with the data
    ids = enqueue_batch("work", p["jobs"], p["ms"])
    serial = enqueue_batch("serial", p["jobs"] // 2, p["ms"])
    workers = start_workers(lab, "rf", p["workers"], topics)
    total = len(ids) + len(serial)
    flushed_at = []
    for share in (4, 2):
        poll(lambda share=share: finished(topics) >= total // share, p["timeout"])
        get_redis().flushall()
        flushed_at.append(finished(topics))
    result.details["finished_at_flush"] = flushed_at[0]
    extra = enqueue_batch("work", max(10, len(ids) // 10), p["ms"], start=len(ids))  # into the empty Redis
    ids += extra
    wait_all(lab, result, topics, len(ids) + len(serial), p["timeout"])
    result.details["workers_that_rebuilt"] = worker_logs(workers, "Rebuilt Redis from the database")
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids + serial, runs)
    work = concurrency(result, "work", ids, runs, {}, 4)
    one = concurrency(result, "serial", serial, runs, {}, 1)
    result.max_concurrent = f"{work} (limit 4); {one} (limit 1)"
    result.injected = (f"FLUSHALL twice, after {' and '.join(map(str, flushed_at))} jobs done; "
                       f"{len(extra)} enqueued after it")
    return result


def redis_restart(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """Stop Redis for 3 s mid-run (it comes back empty), enqueueing meanwhile."""
    from django.db import transaction

    from jobqueue.models import Job

    result = Result("Redis restarts", size, "redis-server stopped 3 s")
    lab.reset("redis-restart")
    ids = enqueue_batch("work", p["jobs"], p["ms"])
    workers = start_workers(lab, "rr", p["workers"], ["work"])
    poll(lambda: finished(["work"]) >= len(ids) // 3, p["timeout"])
    lab.redis.stop()
    down = time.monotonic()
    during: list[str] = []
    errors = 0
    for i in range(p["during"]):
        try:
            if i % 2:
                with transaction.atomic():
                    during.append(str(Job.objects.enqueue("work", {"n": -i, "ms": p["ms"]}).pk))
            else:
                during.append(str(Job.objects.enqueue("work", {"n": -i, "ms": p["ms"]}).pk))
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors += 1
            if errors == 1:
                result.problems.append(f"enqueue raised during the outage: {exc!r}")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down)))
    lab.redis.start()
    result.details["outage_seconds"] = round(time.monotonic() - down, 1)
    result.details["enqueued_during_outage"] = len(during)
    result.details["enqueue_errors"] = errors
    ids += during
    wait_all(lab, result, ["work"], len(ids), p["timeout"])
    result.details["workers_that_saw_the_outage"] = worker_logs(workers, "Lost contact with Redis")
    dead = [w.worker_id for w in workers if not w.alive()]
    if dead:
        result.problems.append(f"worker(s) died during the outage: {dead}")
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs)
    result.max_concurrent = f"{concurrency(result, 'work', ids, runs, {}, 4)} (limit 4)"
    result.injected = (f"redis-server down {result.details['outage_seconds']} s (restarts empty); "
                       f"{len(during)} enqueued meanwhile")
    return result


def pg_restart(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """``pg_ctl restart -m fast`` mid-run: every connection is cut, running jobs included."""
    from jobqueue.models import Job

    result = Result("PostgreSQL restarts", size, "pg_ctl restart -m fast")
    if lab.pg is None:
        result.problems.append("needs the lab's PostgreSQL (run with --db postgres)")
        return result
    lab.reset("pg-restart")
    ids = enqueue_batch("work", p["jobs"], p["ms"])
    workers = start_workers(lab, "pg", p["workers"], ["work"])
    poll(lambda: finished(["work"]) >= len(ids) // 3, p["timeout"])
    running = Job.objects.filter(topic_id="work", status="running").count()
    began = time.monotonic()
    lab.pg.restart()
    result.details["restart_seconds"] = round(time.monotonic() - began, 1)
    result.details["running_at_restart"] = running
    lab.ensure_db()
    wait_all(lab, result, ["work"], len(ids), p["timeout"])
    result.details["workers_that_saw_the_outage"] = worker_logs(workers, "the database") + worker_logs(
        workers, "Database unavailable")
    dead = [w.worker_id for w in workers if not w.alive()]
    if dead:
        result.problems.append(f"worker(s) died after the restart: {dead}")
    stuck = Job.objects.filter(topic_id="work", status__in=["running", "queued"]).count()
    if stuck:
        result.problems.append(f"{stuck} job(s) left running or queued")
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs)
    result.max_concurrent = f"{concurrency(result, 'work', ids, runs, {}, 4)} (limit 4)"
    result.injected = f"pg_ctl restart -m fast with {running} job(s) running"
    return result


def contention(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """Many workers on topics of concurrency 1 and 3; each exits after a few jobs and is
    restarted, so slots change hands all the time."""
    result = Result("Contention", size, f"{p['workers']} workers, each restarted after {p['max_jobs']} jobs")
    lab.reset("contention")
    serial = enqueue_batch("serial", p["serial"], p["ms"])
    trio = enqueue_batch("trio", p["trio"], p["ms"])
    topics = ["serial", "trio"]
    args = ("--max-jobs", str(p["max_jobs"]))
    slots = {i: lab.worker(f"c-{i}-0", topics, *args) for i in range(p["workers"])}
    generation = dict.fromkeys(slots, 0)

    def tick() -> None:
        for i, w in list(slots.items()):
            if not w.alive():
                if w.proc.returncode:
                    result.problems.append(f"worker {w.worker_id} exited with {w.proc.returncode}")
                generation[i] += 1
                slots[i] = lab.worker(f"c-{i}-{generation[i]}", topics, *args)

    wait_all(lab, result, topics, len(serial) + len(trio), p["timeout"], tick)
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, serial + trio, runs)
    serial_rows = analysis.executions_of(serial)
    overlaps = analysis.serial_violations(serial_rows)
    result.details["serial_overlaps"] = overlaps
    if overlaps:
        result.problems.append(f"serial: {overlaps} execution(s) started before the previous one finished")
    one = concurrency(result, "serial", serial, runs, {}, 1)
    three = concurrency(result, "trio", trio, runs, {}, 3)
    result.details["worker_starts"] = sum(generation.values()) + len(generation)
    result.max_concurrent = f"{one} (limit 1); {three} (limit 3)"
    result.injected = (f"{p['workers']} workers on topics of concurrency 1 and 3, "
                       f"{result.details['worker_starts']} worker starts")
    return result


class _Rollback(Exception):
    pass


def transactions(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """Enqueue inside transactions that commit or roll back, interleaved, while workers run."""
    from django.db import transaction

    from jobqueue.engine import TopicKeys, get_redis
    from jobqueue.models import Job, Topic
    from jobqueue.topic_manager import clear_topic_cache

    result = Result("Transactions", size, "")
    lab.reset("transactions")
    committed: list[str] = []
    rolled_back: list[str] = []

    def rollback(fn: Callable[[], list[Any]]) -> None:
        try:
            with transaction.atomic():
                rolled_back.extend(str(j.pk) for j in fn())
                raise _Rollback
        except _Rollback:
            pass

    # The topic's first job, in a transaction that rolls back, creates (and loses) its Topic row.
    Topic.objects.filter(name="work").delete()
    clear_topic_cache()
    rollback(lambda: [Job.objects.enqueue("work", {"n": -1}), Job.objects.enqueue("work", {"n": -2})])
    try:
        with transaction.atomic():
            committed.append(str(Job.objects.enqueue("work", {"n": 0}).pk))
    except Exception as exc:  # noqa: BLE001 - reported
        result.problems.append(f"enqueue after a rolled-back first enqueue raised {exc!r}")
    workers = start_workers(lab, "tx", p["workers"], ["work"])
    variants: list[Callable[[dict[str, Any], str], list[Any]]] = [
        lambda payload, entity: [Job.objects.enqueue("work", payload)],
        lambda payload, entity: [Job.objects.enqueue("work", payload, entity_id=entity)],
        lambda payload, entity: Job.objects.enqueue_many([("work", payload)]),
        lambda payload, entity: [Job.objects.enqueue("work", payload, delay=0.2)],
    ]
    for i in range(p["pairs"]):
        make = variants[i % len(variants)]
        payload = {"n": i, "ms": 1}
        with transaction.atomic():
            committed.extend(str(j.pk) for j in make(payload, f"c{i}"))
            if i % 8 == 7:  # a savepoint rolled back inside a transaction that commits
                rollback(functools.partial(make, payload, f"r{i}"))
        if i % 8 != 7:
            rollback(functools.partial(make, payload, f"r{i}"))
    wait_all(lab, result, ["work"], len(committed), p["timeout"])
    time.sleep(1.5)  # a wrongly pushed rolled-back job would be popped by now
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, committed, runs)
    rows = Job.objects.filter(pk__in=rolled_back).count()
    ran = sum(1 for j in rolled_back if j in runs)
    keys = TopicKeys("work")
    r = get_redis()
    in_redis = sum(1 for j in rolled_back if r.zscore(keys.queue, j) is not None or r.zscore(keys.leases, j)
                   is not None or r.zscore(keys.scheduled, j) is not None)
    result.details.update(rolled_back=len(rolled_back), rolled_back_rows=rows, rolled_back_ran=ran,
                          rolled_back_in_redis=in_redis, workers=len(workers))
    for what, n in (("rows", rows), ("handler runs", ran), ("Redis entries", in_redis)):
        if n:
            result.problems.append(f"rolled-back jobs left {n} {what}")
    result.injected = f"{len(committed)} committed / {len(rolled_back)} rolled back, interleaved"
    return result


def _stubborn(lab: Lab, result: Result, topic: str, bound: float) -> dict[str, Any]:
    """Run a handler that ignores stop requests, stop its worker with two SIGTERMs, and time the exit."""
    from jobqueue.models import Execution, Job

    marker = lab.run_dir / f"{topic}.marker"
    marker.write_text("block")
    job = Job.objects.enqueue(topic, {"marker": str(marker)})
    worker = lab.worker(f"{topic}-1", [topic])
    poll(lambda: str(job.pk) in analysis.read_runs(lab.run_dir), 30, interval=0.1)
    out: dict[str, Any] = {}
    worker.term()
    time.sleep(1.0)
    out["alive_after_first_sigterm"] = worker.alive()
    worker.term()
    began = time.monotonic()
    code = worker.wait(bound)
    out["exit_seconds"] = round(time.monotonic() - began, 1) if code is not None else None
    out["exit_code"] = code
    if code is None:
        result.problems.append(f"{topic}: the worker did not exit within {bound:.0f}s of the second SIGTERM")
        worker.cleanup()
    # Requeued at once, or (if the worker had to go without recording it) after its lease expires.
    status = poll(lambda: Job.objects.filter(pk=job.pk, status="queued").exists() and "queued", 15)
    out["status_after_exit"] = status or Job.objects.get(pk=job.pk).status
    out["executions"] = list(Execution.objects.filter(job=job).values_list("outcome", flat=True))
    if status != "queued":
        result.problems.append(f"{topic}: the job is {out['status_after_exit']} after the worker exited")
    marker.unlink()
    burst = lab.worker(f"{topic}-2", [topic], "--burst")
    if burst.wait(60) is None or not Job.objects.filter(pk=job.pk, status="succeeded").exists():
        result.problems.append(f"{topic}: the requeued job did not succeed on a new worker")
    out["final"] = Job.objects.get(pk=job.pk).status
    return out


def slow(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """Handlers past their timeout (inline and in a child); handlers that ignore stop requests."""
    from jobqueue.models import Execution

    result = Result("Slow and stuck handlers", size, "")
    lab.reset("slow")
    ids = enqueue_batch("slow", p["jobs"], 0) + enqueue_batch("slow-proc", p["jobs"], 0)
    lab.worker("slow-1", ["slow", "slow-proc"])
    wait_all(lab, result, ["slow", "slow-proc"], len(ids), p["timeout"])
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs, retry_outcomes=("timeout",))
    result.twice_cause = "a timeout"
    for topic in ("slow", "slow-proc"):
        rows = list(Execution.objects.filter(job__topic_id=topic).order_by("job_id", "attempt").values_list(
            "attempt", "outcome", "exit_code"))
        first = [r for r in rows if r[0] == 1]
        timed_out = sum(1 for r in first if r[1] == "timeout")
        result.details[f"{topic}_first_attempts_timed_out"] = f"{timed_out}/{len(first)}"
        if timed_out != len(first) or not first:
            result.problems.append(f"{topic}: first attempts {first}, expected every one to time out")
        if topic == "slow-proc" and any(r[2] != -9 for r in first):
            result.problems.append(f"slow-proc: a timed-out child was not killed: {first}")
    bound = 15.0
    result.details["stubborn_inline"] = _stubborn(lab, result, "stubborn", bound)
    result.details["stubborn_process"] = _stubborn(lab, result, "stubborn-proc", bound)
    stop_workers(lab, result)
    exits = [result.details[k]["exit_seconds"] for k in ("stubborn_inline", "stubborn_process")]
    shown = ", ".join(f"{e} s" if e is not None else "never" for e in exits)
    result.injected = (f"{len(ids)} handlers past a 1 s timeout; 2 handlers ignoring stop requests "
                       f"(worker exit after the 2nd SIGTERM: {shown})")
    return result


def _bridge(transport: str) -> Callable[[Lab, dict[str, Any], str], Result]:
    """The Celery bridge's scenario (``bridge.py``) on one broker: imported when it runs."""

    def run(lab: Lab, p: dict[str, Any], size: str) -> Result:
        from . import bridge

        return bridge.bridge_kill9(lab, p, size, transport)

    return run


def _stranded(name: str) -> Callable[[Lab, dict[str, Any], str], Result]:
    """A scenario of ``stranded.py``, which builds on this module: imported when it runs."""

    def run(lab: Lab, p: dict[str, Any], size: str) -> Result:
        from . import stranded

        return getattr(stranded, name)(lab, p, size)

    return run


def redis_failover(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """On a Redis Cluster of 3 masters and 3 replicas (scripts/redis-cluster.sh on ports
    ``JOBQUEUE_FAULTS_CLUSTER_PORT``.. +5, default 7010), ``kill -9`` the master of a topic
    of concurrency 1 mid-drain and promote its replica (``CLUSTER FAILOVER TAKEOVER``).

    What the replica lacks is up to timing (often nothing on one machine), so the scenario
    also takes the last writes away from the promoted master itself: the next ``tail`` ids
    of the queue and the topic's semaphore, as an unreplicated tail would. The workers must
    find it per topic (the topic's ``epoch`` names the dead master) and rebuild it from the
    database: every job runs, none twice, never more at once than the topic allows.
    """

    from django.conf import settings
    from django.test.utils import override_settings

    from jobqueue import engine

    from .cluster import LocalCluster

    result = Result("Redis Cluster failover", size, "kill -9 of a master, replica promoted")
    cluster = LocalCluster(int(os.environ.get("JOBQUEUE_FAULTS_CLUSTER_PORT", "7010")), lab.dir / "cluster")
    cluster.start()
    url = ",".join(f"127.0.0.1:{cluster.port + i}" for i in range(3)).join(("redis+cluster://", ""))
    on_cluster = override_settings(JOBQUEUE={**settings.JOBQUEUE, "REDIS_URL": url})  # jobqueue hears of it
    on_cluster.enable()
    env = {"JOBQUEUE_FAULTS_REDIS_URL": url}
    try:
        lab.reset("redis-failover")
        engine.get_redis().flushall(target_nodes="primaries")
        topics = ["work", "serial"]
        client = engine.get_redis()
        victim = client.get_node_from_key(engine.topic_keys("serial").queue).port  # URL: 3 startup nodes
        spread = {t: client.get_node_from_key(engine.topic_keys(t).queue).name for t in topics}
        ids = enqueue_batch("work", p["jobs"], p["ms"])
        serial = enqueue_batch("serial", p["jobs"] // 2, p["ms"])
        # A new replica's first full sync waits a few seconds; done now, so that the kill
        # below need not wait while the workers drain what it is meant to find queued.
        cluster.wait_in_sync(victim, cluster.replica_of(victim))
        workers = [lab.worker(f"fo-{i}", topics, env=env) for i in range(p["workers"])]
        total = len(ids) + len(serial)
        # Kill once a quarter is done, or earlier once half of `serial` has run: the writes
        # taken away below must include some of its queue, with room for a slow machine.
        serial_queue = engine.topic_keys("serial").queue
        poll(lambda: finished(topics) >= total // 4 or client.zcard(serial_queue) <= len(serial) // 2,
             p["timeout"])
        at = finished(topics)
        k = engine.topic_keys("serial")
        epoch = client.get(k.epoch)  # what the replica holds too: the dead master's run id
        promoted = cluster.fail_over(victim)
        engine.reset_clients()
        client = engine.get_redis()
        tail = [i.decode() for i in client.zrange(k.queue, 0, p["tail"] - 1)]
        with client.pipeline(transaction=False) as pipe:
            if tail:
                pipe.zrem(k.queue, *tail)
            pipe.delete(k.lock)
            pipe.delete(k.holders)
            # A worker may have found the new master and rebuilt the topic already: the
            # epoch goes back to the dead master's, as on a replica that lacks the writes.
            if epoch is not None:
                pipe.set(k.epoch, epoch)
            pipe.execute()
        extra = enqueue_batch("work", max(10, len(ids) // 10), p["ms"], start=len(ids))  # after the failover
        ids += extra
        wait_all(lab, result, topics, len(ids) + len(serial), p["timeout"])
        rebuilt = [w for w in workers if "Rebuilt Redis from the database for" in w.output()]
        # The topics found to have lost data (a worker that lost its connection also resyncs
        # all its topics when it is back, logged otherwise): the killed master's only.
        checked = sorted({t for w in workers for line in re.findall(
            r"Rebuilt Redis from the database for ([^(]+) \(", w.output()) for t in line.split(", ")})
        result.details.update(masters=spread, killed_port=victim, promoted_port=promoted, finished_at_kill=at,
                              tail_removed=len(tail), workers_that_rebuilt=len(rebuilt), rebuilt_topics=checked)
        if not rebuilt:
            result.problems.append("no worker found that the topic lost its last writes")
        moved = [t for t in checked if spread[t] != spread["serial"]]
        if moved:
            result.problems.append(f"topics of a shard that kept its data were rebuilt: {moved}")
        dead = [w.worker_id for w in workers if not w.alive()]
        if dead:
            result.problems.append(f"worker(s) died during the failover: {dead}")
        stop_workers(lab, result)
        runs = analysis.read_runs(lab.run_dir)
        tally(result, ids + serial, runs)
        work = concurrency(result, "work", ids, runs, {}, 4)
        one = concurrency(result, "serial", serial, runs, {}, 1)
        result.max_concurrent = f"{work} (limit 4); {one} (limit 1)"
        result.injected = (f"kill -9 of master :{victim} after {at} jobs done, replica :{promoted} promoted; "
                           f"{len(tail)} queued ids and the slot of `serial` dropped from it; "
                           f"{len(extra)} enqueued after")
    finally:
        lab.stop_workers(grace=5)
        on_cluster.disable()
        engine.reset_clients()
        cluster.stop()
    return result


# -- flow control under faults ----------------------------------------------------------

#: The ``limited`` topic's limits (bench/faultapp/jobs.py).
LIMITED_RATE, LIMITED_BURST, LIMITED_PER_KEY = 40.0, 4, 1


def enqueue_keyed(count: int, keys: int, ms: float, start: int = 0) -> dict[str, list[str]]:
    """``count`` jobs of the ``limited`` topic spread over ``keys`` keys; their ids by key."""
    from jobqueue.models import Job

    jobs = Job.objects.enqueue_many([{"topic": "limited", "payload": {"n": start + i, "ms": ms},
                                      "key": f"k{(start + i) % keys}"} for i in range(count)])
    by_key: dict[str, list[str]] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(str(job.pk))
    return by_key


def flow_limits(result: Result, by_key: dict[str, list[str]], runs: dict[str, list[analysis.Run]],
                killed_at: dict[int, float]) -> None:
    """No key ran more jobs at once than its limit; no window between two starts, those
    that span a flush included (the rebuilt topic replays its recent starts into its bucket), saw more
    starts than the bucket allows: burst + window x rate, plus two for the start times'
    jitter (a handler logs its start after its pop and its claim in the database; the pop
    is what is limited)."""
    worst = 0
    for key, ids in by_key.items():
        seen = analysis.max_overlap(analysis.run_intervals(runs, killed_at, set(ids)))
        rows = analysis.execution_overlap(analysis.executions_of(ids))
        worst = max(worst, seen, rows)
        if max(seen, rows) > LIMITED_PER_KEY:
            result.problems.append(f"key {key}: {max(seen, rows)} ran at once, over its limit of {LIMITED_PER_KEY}")
    starts = sorted(c.start for calls in runs.values() for c in calls)
    excess = 0.0
    for i, first in enumerate(starts):
        for j in range(i, min(len(starts), i + 100)):
            excess = max(excess, (j - i + 1) - (LIMITED_BURST + (starts[j] - first) * LIMITED_RATE))
    if excess >= 2:
        result.problems.append(f"rate: {excess:.2f} starts over the bucket in one window")
    result.details["flow"] = {"max_per_key": worst, "rate_excess": round(excess, 3)}
    result.max_concurrent = f"{worst} per key (limit {LIMITED_PER_KEY}); rate excess {excess:.2f}"


def flow_kill9(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """kill -9 with limits on: SIGKILL a random worker every 2 s on a rate-limited topic
    with one running job per key."""
    result = Result("kill -9, flow limits", size, "")
    lab.reset("flow-kill9")
    by_key = enqueue_keyed(p["jobs"], p["keys"], p["ms"])
    ids = [i for key_ids in by_key.values() for i in key_ids]
    kills = RollingKills(lab, "fk9", ["limited"], p["workers"])
    wait_all(lab, result, ["limited"], len(ids), p["timeout"], kills.tick)
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs, kills.killed, kills.killed_at)
    flow_limits(result, by_key, runs, kills.killed_at)
    result.details["kills"] = len(kills.killed)
    result.injected = (f"{len(kills.killed)} × SIGKILL of 1 of {p['workers']} workers, every 2 s; "
                       f"40/s:4, {LIMITED_PER_KEY} per key, {p['keys']} keys")
    return result


def flow_redis_flush(lab: Lab, p: dict[str, Any], size: str) -> Result:
    """FLUSHALL twice while workers run a rate-limited topic with one running job per key."""
    from jobqueue.engine import get_redis

    result = Result("Redis loses its data, flow limits", size, "")
    lab.reset("flow-redis-flush")
    by_key = enqueue_keyed(p["jobs"], p["keys"], p["ms"])
    total = sum(len(v) for v in by_key.values())
    start_workers(lab, "frf", p["workers"], ["limited"])
    for share in (4, 2):
        poll(lambda share=share: finished(["limited"]) >= total // share, p["timeout"])
        get_redis().flushall()
    extra = enqueue_keyed(max(10, total // 10), p["keys"], p["ms"], start=total)
    for key, key_ids in extra.items():
        by_key.setdefault(key, []).extend(key_ids)
    ids = [i for key_ids in by_key.values() for i in key_ids]
    wait_all(lab, result, ["limited"], len(ids), p["timeout"])
    stop_workers(lab, result)
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs)
    flow_limits(result, by_key, runs, {})
    result.injected = f"FLUSHALL twice; 40/s:4, {LIMITED_PER_KEY} per key, {p['keys']} keys"
    return result


SCENARIOS: dict[str, Callable[[Lab, dict[str, Any], str], Result]] = {
    "kill9": kill9,
    "redis-flush": redis_flush,
    "redis-restart": redis_restart,
    "pg-restart": pg_restart,
    "contention": contention,
    "transactions": transactions,
    "slow": slow,
    "enqueuer-cut": _stranded("enqueuer_cut"),
    "enqueuer-kill": _stranded("enqueuer_killed"),
    "bridge-kill9": _bridge("amqp"),
    "bridge-kill9-redis": _bridge("redis"),
    "redis-failover": redis_failover,
    "flow-kill9": flow_kill9,
    "flow-redis-flush": flow_redis_flush,
}
