"""Jobs whose push to Redis never happened: committed while the enqueuer could not reach
Redis, or by a process that died between its commit and its push, while Redis kept its
data (so the topic's epoch check sees nothing wrong). A running worker finds and runs them
within ``RECONCILE_SECONDS``, without a restart."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobqueue import engine
from jobqueue.engine import TopicKeys, TopicLock
from jobqueue.models import Job, JobStatus
from jobqueue.worker import maintenance, reconcile
from tests.workerutil import WorkerPool, jobqueue_settings, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE = "redis://127.0.0.1:1/0"


class DiedAfterCommit(Exception):
    """Stands for a process killed between its commit and its push."""


def in_redis(job: Job) -> bool:
    k = TopicKeys(job.topic_id)
    r = engine.get_redis()
    return any(r.zscore(key, str(job.pk)) is not None for key in (k.queue, k.leases, k.scheduled))


def commit_then_die(make):
    """Run ``make`` in a transaction whose commit is followed by a failure before the push."""

    def die():
        raise DiedAfterCommit

    made = []
    with pytest.raises(DiedAfterCommit), transaction.atomic():
        transaction.on_commit(die)  # runs first: the push registered by enqueue never does
        made.append(make())
    return made[0]


def later(seconds: float) -> dt.datetime:
    """A time that many seconds from now, for a pass that must see today's rows as old."""
    return timezone.now() + dt.timedelta(seconds=seconds)


def next_pass(topic: str = "echo", seconds: float = 60, **limits: int) -> reconcile.ReconcileReport:
    """One reconciliation pass ``seconds`` from now, its turn taken whatever the last pass left."""
    engine.get_redis().delete(TopicKeys(topic).reconcile_turn)
    return reconcile.reconcile([topic], now=later(seconds))


def queued_ids(*jobs: Job) -> list[str]:
    return [str(job.pk) for job in jobs]


@pytest.fixture
def workers(transactional_db, tmp_path):
    pool = WorkerPool(tmp_path)
    yield pool
    pool.close()


@pytest.mark.slow
def test_a_running_worker_runs_jobs_whose_push_never_happened(workers):
    failed = Job.objects.enqueue("echo", {"n": "requeued"})
    engine.remove("echo", str(failed.pk))
    hour_ago = timezone.now() - dt.timedelta(hours=1)
    Job.objects.filter(pk=failed.pk).update(status=JobStatus.FAILED, created_at=hour_ago)
    worker = workers.start("--topics", "echo", "--worker-id", "steady", RECONCILE_SECONDS="1")
    wait_for(lambda: [h.worker_id for h in TopicLock.holders("echo")] == ["steady"], 20, "the worker's slot")

    with jobqueue_settings(REDIS_URL=UNREACHABLE):
        engine.reset_clients()
        stranded = [Job.objects.enqueue("echo", {"n": 1})]
        with transaction.atomic():
            stranded.append(Job.objects.enqueue("echo", {"n": 2}, entity_id="e2"))
        stranded += Job.objects.enqueue_many([("echo", {"n": n}) for n in (3, 4, 5)])
        stranded.append(Job.objects.enqueue("echo", {"n": 6}, delay=0.5))
        failed.requeue()  # queued again, but created an hour ago
        stranded.append(failed)
    engine.reset_clients()
    stranded.append(commit_then_die(lambda: Job.objects.enqueue("echo", {"n": 7})))
    stranded += commit_then_die(lambda: Job.objects.enqueue_many([("echo", {"n": 8}), ("echo", {"n": 9})]))
    assert not any(in_redis(job) for job in stranded)

    def all_done() -> bool:
        return Job.objects.filter(pk__in=[j.pk for j in stranded], status=JobStatus.SUCCEEDED).count() == 10

    try:
        wait_for(all_done, 30, "the stranded jobs to run")
    except AssertionError:
        left = dict(Job.objects.filter(pk__in=[j.pk for j in stranded]).values_list("payload__n", "status"))
        raise AssertionError(f"not all stranded jobs ran: {left}\n--- worker log ---\n{worker.output()}") from None
    assert worker.proc.poll() is None  # the same worker, never restarted
    assert "Rebuilt Redis" not in worker.output() and "Lost contact" not in worker.output()
    assert [job.executions.count() for job in stranded] == [1] * 10
    depths = engine.depths("echo")
    assert (depths["queued"], depths["scheduled"]) == (0, 0)


# -- one pass, in this process ---------------------------------------------------------------


def test_a_pass_puts_back_only_the_queued_jobs_redis_does_not_hold(redis_client):
    in_queue = Job.objects.enqueue("echo", {"n": 1})
    taken = Job.objects.enqueue("echo", {"n": 2})
    assert engine.pop("echo") == [str(in_queue.pk)]  # a worker leased it; its row is still queued
    stranded = commit_then_die(lambda: Job.objects.enqueue("echo", {"n": 3}, priority=5, entity_id="e3"))
    report = next_pass()
    assert report.pushed == {"echo": 1} and report.scheduled == {}
    assert report.checked == {"echo": 3}
    assert engine.queue_ids("echo") == queued_ids(stranded, taken)
    assert engine.depths("echo")["leased"] == 1
    assert redis_client.hget(TopicKeys("echo").entities, "e3") == str(stranded.pk).encode()
    assert next_pass().pushed == {}  # nothing left to put back


def test_rows_younger_than_the_grace_period_are_left_to_their_push():
    stranded = commit_then_die(lambda: Job.objects.enqueue("echo"))
    assert reconcile.grace_seconds() == 5  # a third of the default RECONCILE_SECONDS
    assert next_pass(seconds=4).pushed == {}
    assert engine.queue_ids("echo") == []
    assert next_pass(seconds=6).pushed == {"echo": 1}
    assert engine.queue_ids("echo") == queued_ids(stranded)


def test_one_worker_checks_a_topic_per_period():
    with jobqueue_settings(RECONCILE_SECONDS=0.3):
        assert reconcile.reconcile(["echo", "other"]).checked == {"echo": 0, "other": 0}
        commit_then_die(lambda: Job.objects.enqueue("echo"))
        assert reconcile.reconcile(["echo", "other"], now=later(60)).checked == {}  # another worker's turn
        report = wait_for(lambda: reconcile.reconcile(["echo"], now=later(60)).pushed, 5, "the next turn")
    assert report == {"echo": 1}


def test_a_due_scheduled_job_redis_does_not_hold_is_scheduled_then_promoted():
    due = commit_then_die(lambda: Job.objects.enqueue("echo", {"n": 1}, delay=1))
    not_yet = commit_then_die(lambda: Job.objects.enqueue("echo", {"n": 2}, delay=3600))
    in_redis = Job.objects.enqueue("echo", {"n": 3}, delay=1)
    report = next_pass(seconds=30)
    assert report.scheduled == {"echo": 1} and report.pushed == {}

    def promoted() -> bool:
        maintenance.promote(["echo"])
        return len(engine.queue_ids("echo")) == 2

    wait_for(promoted, 5, "both due jobs to be promoted")
    assert sorted(engine.queue_ids("echo")) == sorted(queued_ids(due, in_redis))
    assert Job.objects.get(pk=due.pk).status == JobStatus.QUEUED
    assert Job.objects.get(pk=not_yet.pk).status == JobStatus.SCHEDULED
    assert next_pass(seconds=30).scheduled == {}  # not due yet, whatever Redis holds


def test_a_new_job_is_found_at_once_behind_a_long_queue(monkeypatch):
    monkeypatch.setattr(reconcile, "SWEEP_LIMIT", 2)
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(10)])
    stranded = commit_then_die(lambda: Job.objects.enqueue("echo", {"n": "last"}, priority=-5))
    report = next_pass(seconds=6)  # past the grace period, not past the period
    assert report.pushed == {"echo": 1}
    assert engine.queue_ids("echo")[-1] == str(stranded.pk)


def test_each_pass_reads_a_bounded_slice_and_the_sweep_comes_round(monkeypatch):
    monkeypatch.setattr(reconcile, "HEAD_LIMIT", 3)
    monkeypatch.setattr(reconcile, "SWEEP_LIMIT", 4)
    monkeypatch.setattr(reconcile, "SCHEDULED_LIMIT", 2)
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(10)])
    requeued = Job.objects.enqueue("echo", priority=-5)  # last in queue order
    engine.remove("echo", str(requeued.pk))
    Job.objects.filter(pk=requeued.pk).update(created_at=later(-3600))  # out of the head's reach
    Job.objects.enqueue_many([{"topic": "echo", "delay": 1} for _ in range(5)])
    found = []
    for _ in range(4):
        with CaptureQueriesContext(connection) as queries:
            report = next_pass(seconds=3600)
        assert len(queries) <= 4  # head, sweep (two range scans), due scheduled rows
        assert report.checked["echo"] <= 3 + 4 + 2
        found.append(report.pushed.get("echo", 0))
    # 11 queued rows, 4 a pass: the third pass reaches the last one, the fourth starts over.
    assert found == [0, 0, 1, 0]
    assert engine.queue_ids("echo")[-1] == str(requeued.pk)


def test_the_head_goes_on_where_a_full_pass_stopped(monkeypatch):
    monkeypatch.setattr(reconcile, "HEAD_LIMIT", 2)
    monkeypatch.setattr(reconcile, "SWEEP_LIMIT", 1)  # the sweep stays among the older jobs, ahead in the queue
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(10)])
    Job.objects.filter(topic_id="echo").update(created_at=later(-3600))
    jobs = commit_then_die(lambda: Job.objects.enqueue_many([("echo", {"n": n}) for n in range(5)]))
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(created_at=timezone.now(), priority=-5)  # all one time
    assert [next_pass(seconds=6).pushed.get("echo", 0) for _ in range(4)] == [2, 2, 1, 0]
    assert sorted(engine.queue_ids("echo")[10:]) == sorted(queued_ids(*jobs))


def test_a_pass_reads_and_puts_back_a_chunk_at_a_time(monkeypatch):
    """However many rows a pass may read, it holds one chunk of them at a time."""
    monkeypatch.setattr(reconcile, "CHUNK", 2)
    monkeypatch.setattr(reconcile, "HEAD_LIMIT", 5)
    monkeypatch.setattr(reconcile, "SWEEP_LIMIT", 3)
    jobs = commit_then_die(lambda: Job.objects.enqueue_many([("echo", {"n": n}) for n in range(7)]))
    sizes = []
    real = engine.restore

    def restore(topic, items, keys):
        sizes.append(len(items))
        return real(topic, items, keys)

    monkeypatch.setattr(engine, "restore", restore)
    reports = [next_pass(seconds=6) for _ in range(3)]
    # The head reads 5 (2 + 2 + 1), the sweep the first 3 in queue order (the head's already),
    # then the head goes on with the last 2.
    assert [r.pushed.get("echo", 0) for r in reports] == [5, 2, 0]
    assert reports[0].checked == {"echo": 5}
    assert sizes and max(sizes) <= 2
    assert sorted(engine.queue_ids("echo")) == sorted(queued_ids(*jobs))


def test_a_head_left_far_behind_looks_back_ten_periods_at_most(monkeypatch):
    monkeypatch.setattr(reconcile, "HEAD_LIMIT", 2)
    monkeypatch.setattr(reconcile, "SWEEP_LIMIT", 1)
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(5)])
    Job.objects.filter(topic_id="echo").update(created_at=later(-3600))
    engine.save_reconcile_cursors("echo", {"head": later(-3601).isoformat()})  # workers stopped for an hour
    stranded = commit_then_die(lambda: Job.objects.enqueue("echo", priority=-5))
    assert next_pass(seconds=6).pushed == {"echo": 1}
    assert engine.queue_ids("echo")[-1] == str(stranded.pk)


def test_an_unreadable_position_starts_over(caplog):
    engine.save_reconcile_cursors("echo", {"head": "not a time", "sweep": "1 2"})
    stranded = commit_then_die(lambda: Job.objects.enqueue("echo"))
    with caplog.at_level(logging.WARNING, logger="jobqueue.worker"):
        assert next_pass().pushed == {"echo": 1}
    assert "unreadable reconciliation position 'not a time'" in caplog.text
    assert "Put back 1 queued and 0 scheduled job(s) of topic echo" in caplog.text
    assert engine.queue_ids("echo") == queued_ids(stranded)
