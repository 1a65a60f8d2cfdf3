"""The fast path of the transitions (the named statements of ``queries.sql``) leaves the
same rows and the same Redis state as their ORM twins, whatever the order of events.

Hypothesis draws a sequence of transitions (enqueue, claim, succeed with or without
the next claim fused in, retry, fail, cancel, requeue, run now, a new priority) and
runs it twice: with the fast path, then under ``fastsql.orm_only()``. Job ids are
random, so jobs are compared by the order in which the sequence created them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue import engine
from jobqueue.engine import get_redis, topic_keys
from jobqueue.exceptions import InvalidTransition
from jobqueue.models import Execution, Job, JobStatus
from jobqueue.transitions import attempt, fastsql, manual

TOPICS = ("echo", "stage1", "stage2")  # stage1 chains into stage2: its successes are not quiet
ROW = ("status", "priority", "payload", "result", "error", "progress", "attempts", "max_attempts", "worker_id",
       "entity_id", "has_dependents", "timeout")
TIMES = ("run_after", "queued_at", "started_at", "finished_at")
EXECUTION = ("attempt", "outcome", "worker_id", "error", "traceback", "stdout", "exit_code")

index = st.integers(min_value=0, max_value=30)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.sampled_from(TOPICS[:2]), st.integers(-3, 3), st.booleans()),
        st.tuples(st.just("claim"), st.sampled_from(TOPICS)),
        st.tuples(st.just("succeed"), index, st.booleans()),
        st.tuples(st.just("succeed_batch"), st.sampled_from(TOPICS), st.integers(1, 3), st.integers(0, 3)),
        st.tuples(st.just("fail"), index, st.booleans()),
        st.tuples(st.sampled_from(["cancel", "requeue", "run_now"]), index),
        st.tuples(st.just("priority"), index, st.integers(-5, 5)),
    ),
    min_size=1,
    max_size=25,
)


def pick(jobs: list[Job], k: int, status: str | None = None) -> Job | None:
    rows = {j.pk: j for j in Job.objects.filter(pk__in=[j.pk for j in jobs])}
    candidates = [rows[j.pk] for j in jobs if status is None or rows[j.pk].status == status]
    return candidates[k % len(candidates)] if candidates else None


def claim_next(topic: str) -> None:
    ids = engine.pop(topic, 1)
    if ids and attempt.claim(ids[0], "w", 7) is None:
        engine.ack(topic, ids[0])


def succeed_batch(topic: str, successes: int, claims: int, jobs: list[Job]) -> None:
    """What a worker claiming ahead does: hold the successes of up to ``successes``
    running jobs of ``topic``, then record them with the claim of up to ``claims`` more
    (the ORM path: one success at a time, then one claim at a time)."""
    running = [j for j in Job.objects.filter(topic_id=topic, status=JobStatus.RUNNING, pk__in=[j.pk for j in jobs])
               .order_by("created_at")][:successes]
    next_job = attempt.NextJob(lambda: engine.pop(topic, claims) if claims else [], "w", 7, {}, may_hold=True)
    for job in running:
        attempt.succeed(job, execution_for(job), {"n": 1}, {"n": 1}, defer_ack=True, next_job=next_job)
    if next_job.held:  # the fast path held every quiet success
        next_job.may_hold = False
        attempt.record_held(next_job)
        if set(next_job.ids) - {str(j.pk) for j, _ in next_job.claimed}:
            for job_id in set(next_job.ids) - {str(j.pk) for j, _ in next_job.claimed}:
                engine.ack(topic, job_id)  # leased, but cancelled meanwhile
    else:
        for _ in range(claims):
            claim_next(topic)
    for job in next_job.recorded:
        engine.ack(topic, str(job.pk), job.entity_id, attempt.success_tally(job))


def execution_for(job: Job) -> Execution:
    now = timezone.now()
    return Execution(job=job, attempt=attempt.execution_number(job), worker_id="w", started_at=now,
                     finished_at=now, outcome="succeeded", stdout="out")


def run(op: tuple[Any, ...], jobs: list[Job]) -> None:
    name = op[0]
    if name == "enqueue":
        _, topic, priority, later = op
        jobs.append(Job.objects.enqueue(topic, {"n": len(jobs)}, priority=priority, delay=3600 if later else None))
    elif name == "claim":
        claim_next(op[1])
    elif name == "succeed":
        job = pick(jobs, op[1], JobStatus.RUNNING)
        if job is not None:
            fuse = op[2]
            next_job = attempt.NextJob(lambda: engine.pop(job.topic_id, 1), "w", 7, {})
            attempt.succeed(job, execution_for(job), {"n": 1}, {"n": 1}, next_job=next_job if fuse else None)
            if next_job.ids and not next_job.claimed:
                engine.ack(job.topic_id, next_job.ids[0])  # leased, but cancelled meanwhile
            elif fuse and not next_job.ids:
                claim_next(job.topic_id)  # what the worker does next when no statement claimed it
    elif name == "succeed_batch":
        succeed_batch(*op[1:], jobs)
    elif name == "fail":
        job = pick(jobs, op[1], JobStatus.RUNNING)
        if job is not None:
            retry_at = timezone.now() + dt.timedelta(hours=1) if op[2] else None
            execution = execution_for(job)
            execution.outcome, execution.error = ("retry" if retry_at else "failed"), "boom"
            attempt.fail(job, execution, "boom", retry_at)
    else:
        job = pick(jobs, op[1])
        if job is None:
            return
        try:
            if name == "priority":
                manual.set_priority(job, op[2])
            else:
                getattr(manual, name)(job)
        except InvalidTransition:
            pass


def snapshot(jobs: list[Job]) -> dict[str, Any]:
    labels: dict[str, str] = {}
    rows = []
    for i, job in enumerate(jobs):
        labels[str(job.pk)] = str(i)
        family = [Job.objects.get(pk=job.pk), *Job.objects.filter(parent_id=job.pk).order_by("created_at")]
        for n, member in enumerate(family):
            labels[str(member.pk)] = f"{i}.{n}"
            executions = Execution.objects.filter(job_id=member.pk).order_by("attempt")
            rows.append((
                labels[str(member.pk)],
                tuple(getattr(member, f) for f in ROW),
                tuple(getattr(member, f) is None for f in TIMES),
                [tuple(getattr(e, f) for f in EXECUTION) for e in executions],
            ))
    r = get_redis()
    state = {}
    for topic in TOPICS:
        k = topic_keys(topic)
        state[topic] = (
            [labels.get(m.decode(), "?") for m in r.zrange(k.queue, 0, -1)],
            sorted(labels.get(m.decode(), "?") for m in r.zrange(k.leases, 0, -1)),
            sorted(labels.get(m.decode(), "?") for m in r.zrange(k.scheduled, 0, -1)),
        )
    return {"rows": rows, "redis": state, "jobs": Job.objects.count(), "executions": Execution.objects.count()}


def run_all(ops: list[tuple[Any, ...]]) -> dict[str, Any]:
    Execution.objects.all().delete()
    Job.objects.all().delete()
    get_redis().flushdb()
    jobs: list[Job] = []
    for op in ops:
        run(op, jobs)
    return snapshot(jobs)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_fast_path_and_orm_leave_the_same_rows_and_redis(ops):
    assert fastsql.enabled()  # SQLite and PostgreSQL both have RETURNING
    fast = run_all(ops)
    with fastsql.orm_only():
        assert not fastsql.enabled()
        orm = run_all(ops)
    assert fast == orm


@pytest.mark.django_db(transaction=True)
def test_a_fused_success_claims_the_next_job_on_postgresql_only():
    """The one case the two paths take different routes to the same state."""
    first, second = Job.objects.enqueue("echo", {"n": 1}), Job.objects.enqueue("echo", {"n": 2})
    claim_next("echo")
    job = Job.objects.get(pk=first.pk)
    next_job = attempt.NextJob(lambda: engine.pop("echo", 1), "w", 7, {})
    attempt.succeed(job, execution_for(job), None, None, next_job=next_job)
    claimed = next_job.claimed[0][0] if next_job.claimed else None
    if connection.vendor == "postgresql":
        assert claimed is not None and claimed.pk == second.pk and claimed.status == JobStatus.RUNNING
    else:
        assert claimed is None and Job.objects.get(pk=second.pk).status == JobStatus.QUEUED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cancelled", [False, True])
def test_held_successes_recorded_with_several_claims_leave_what_the_orm_leaves(cancelled):
    """A worker's batch (two successes held, recorded with the claim of the next two)
    against the same jobs ended and claimed one at a time by the ORM."""
    ops: list[tuple[Any, ...]] = [("enqueue", "echo", 0, False) for _ in range(5)]
    ops += [("claim", "echo"), ("claim", "echo")]
    if cancelled:
        ops.append(("cancel", 3))  # a queued job: out of the queue, so the claims skip it
    ops.append(("succeed_batch", "echo", 2, 2))
    fast = run_all(ops)
    assert [row[1][0] for row in fast["rows"]] == (
        ["succeeded", "succeeded", "running", "cancelled", "running"] if cancelled
        else ["succeeded", "succeeded", "running", "running", "queued"]
    )
    with fastsql.orm_only():
        orm = run_all(ops)
    assert fast == orm
