"""A worker holding one slot of a topic leases a few job ids per Redis call (its batch,
see ``jobqueue/worker/readahead.py``): fewer round trips per job, each job still claimed
when it starts, recorded, and acknowledged once; priorities, cancels, stops and the
reaper keep their guarantees."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest
import redis
from django.db import connection, transaction
from redis.client import Pipeline

from jobqueue import engine
from jobqueue.engine import TopicLock, get_redis, sending, topic_keys
from jobqueue.models import Execution, Job, JobStatus
from jobqueue.signals import job_started
from jobqueue.transitions.recovery import recover
from jobqueue.worker import Worker, readahead, worker
from jobqueue.worker.heartbeat import Heartbeat
from jobqueue.worker.lifecycle import claim
from jobqueue.worker.readahead import PREFETCH_WINDOW_SECONDS, ReadAhead

from .workerutil import jobqueue_settings, run_worker

pytestmark = pytest.mark.django_db(transaction=True)

#: WORKER_PREFETCH's default.
PREFETCH = 8


@pytest.fixture
def full_batches(monkeypatch):
    """Every batch as large as WORKER_PREFETCH allows, however long the test's jobs take
    (the window is about time; these tests are about counts)."""
    monkeypatch.setattr(readahead, "PREFETCH_WINDOW_SECONDS", 1e9)


@pytest.fixture
def no_periodic_passes(monkeypatch):
    """The worker's maintenance and slot passes run once, at its start: what a drain
    costs per job is then only the jobs' own calls."""
    monkeypatch.setattr(worker, "MAINTENANCE_SECONDS", 1e9)
    monkeypatch.setattr(worker, "SLOT_RETRY_SECONDS", 1e9)
    monkeypatch.setattr(worker, "SWEEP_SECONDS", 1e9)


@contextmanager
def on_job_started(receiver):
    job_started.connect(receiver, dispatch_uid="tests.prefetch.job_started")
    try:
        yield
    finally:
        job_started.disconnect(dispatch_uid="tests.prefetch.job_started")


class RedisCalls:
    """Counts the round trips to Redis made by this thread (a pipeline is one, and so are
    the commands of one ``sending.call``, named by theirs)."""

    def __init__(self):
        self.count = 0
        self.thread = threading.get_ident()
        self.names: Counter[str] = Counter()  # by command (a pipeline as "pipeline"), for failure messages

    @contextmanager
    def counting(self):
        calls = self
        monkeypatch = pytest.MonkeyPatch()
        clients = [redis.Redis, *([redis.RedisCluster] if hasattr(redis, "RedisCluster") else [])]
        for cls in clients:
            original = cls.execute_command

            def execute_command(client, *args, _original=original, **kwargs):
                if threading.get_ident() == calls.thread:
                    calls.count += 1
                    calls.names[str(args[0]) if args else "?"] += 1
                return _original(client, *args, **kwargs)

            monkeypatch.setattr(cls, "execute_command", execute_command)
        original_execute = Pipeline.execute

        def execute(pipe, *args, **kwargs):
            if threading.get_ident() == calls.thread:
                calls.count += 1
                calls.names["pipeline"] += 1
            return original_execute(pipe, *args, **kwargs)

        monkeypatch.setattr(Pipeline, "execute", execute)
        original_call = sending.call

        def call(client, *commands):  # commands sent in one write on the thread's connection
            if threading.get_ident() == calls.thread:
                calls.count += 1
                calls.names["+".join(str(command[0]) for command in commands)] += 1
            return original_call(client, *commands)

        monkeypatch.setattr(sending, "call", call)
        try:
            yield self
        finally:
            monkeypatch.undo()


class StatementLog:
    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


#: The Redis calls of the last :func:`drain`, by command.
LAST_CALLS: Counter[str] = Counter()


def drain(n: int) -> tuple[int, int]:
    """Drain ``n`` queued echo jobs with one burst worker: its Redis round trips and SQL
    statements (the main thread's)."""
    Job.objects.all().delete()
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(n)]
    calls, statements = RedisCalls(), StatementLog()
    with calls.counting(), connection.execute_wrapper(statements):
        run_worker("echo")
    assert Counter(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)) == {
        JobStatus.SUCCEEDED: n
    }
    assert Execution.objects.filter(job__in=jobs, outcome="succeeded").count() == n
    LAST_CALLS.clear()
    LAST_CALLS.update(calls.names)
    return calls.count, statements.count


# -- round trips --------------------------------------------------------------------------


@pytest.mark.usefixtures("full_batches", "no_periodic_passes")
def test_a_drain_makes_one_redis_call_per_batch_not_per_job():
    drain(1)  # the process's first calls load scripts and announce the topic
    small_calls, small_statements = drain(PREFETCH)
    small_names = dict(LAST_CALLS)
    extra = 8 * PREFETCH
    calls, statements = drain(PREFETCH + extra)
    per_job = (calls - small_calls) / extra
    # One call leases a batch and acknowledges the successes before it; one id at a time
    # would take at least one call per job.
    assert per_job <= 1.5 / PREFETCH, (calls, small_calls, dict(LAST_CALLS), small_names)
    # The database is not asked more for it: one statement per job on PostgreSQL (the
    # success claims the next job); elsewhere a claim, and a success in a transaction.
    assert (statements - small_statements) / extra <= (1 if connection.vendor == "postgresql" else 4)


@pytest.mark.usefixtures("full_batches", "no_periodic_passes")
def test_prefetch_of_one_leases_one_id_per_call():
    with jobqueue_settings(WORKER_PREFETCH=1):
        drain(1)
        small_calls, _ = drain(4)
        calls, _ = drain(4 + 16)
    assert calls - small_calls >= 16


def test_prefetch_follows_the_pace_of_recent_jobs():
    ahead = ReadAhead()
    assert ahead.prefetch(PREFETCH) == 1  # nothing observed yet
    ahead.observe(PREFETCH_WINDOW_SECONDS / 100)
    assert ahead.prefetch(PREFETCH) == PREFETCH
    assert ahead.prefetch(1) == 1
    ahead.observe(PREFETCH_WINDOW_SECONDS * 2)  # a slow job: one id at a time at once
    assert ahead.prefetch(PREFETCH) == 1
    ahead.observe(PREFETCH_WINDOW_SECONDS / 4)  # faster ones bring the pace down by halves
    assert ahead.prefetch(PREFETCH) == 1
    for _ in range(10):
        ahead.observe(PREFETCH_WINDOW_SECONDS / 100)
    assert ahead.prefetch(PREFETCH) == PREFETCH


# -- what a batch must not change ------------------------------------------------------


@pytest.mark.usefixtures("full_batches")
def test_a_job_of_higher_priority_waits_behind_one_batch_at_most():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3 * PREFETCH)]
    urgent: list[Job] = []

    def push_urgent(sender, job, **kwargs):
        if job.pk == jobs[2].pk:  # the first batch is leased by now
            urgent.append(Job.objects.enqueue("echo", {"urgent": True}, priority=50))

    with on_job_started(push_urgent):
        run_worker("echo")
    order = list(Execution.objects.order_by("started_at", "id").values_list("job_id", flat=True))
    assert len(order) == 3 * PREFETCH + 1
    behind = order.index(urgent[0].pk) - order.index(jobs[2].pk) - 1
    assert 0 < behind <= PREFETCH - 1  # the rest of the batch leased before the push, no more


@pytest.mark.usefixtures("full_batches")
def test_a_job_cancelled_while_in_a_batch_never_runs():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(PREFETCH)]
    doomed = jobs[4]
    cancelling = Worker(topics=["echo"], burst=True, install_signals=False)
    run_claimed = cancelling._run_claimed

    def cancel_doomed(sender, job, **kwargs):
        if job.pk == jobs[2].pk:
            # Leased for the worker, and on PostgreSQL claimed with the second job's
            # success (a claim announces the start): then the cancel asks it to abort.
            assert Job.objects.get(pk=doomed.pk).cancel()

    def heartbeat_first(job, execution):
        Heartbeat(cancelling).check_abort()  # as if the heartbeat looked just before
        run_claimed(job, execution)

    cancelling._run_claimed = heartbeat_first
    with on_job_started(cancel_doomed):
        assert cancelling.run() == 0
    doomed.refresh_from_db()
    assert doomed.status == JobStatus.CANCELLED and doomed.result is None
    if connection.vendor == "postgresql":
        [execution] = Execution.objects.filter(job=doomed)  # its claimed attempt, ended before it started
        assert (execution.outcome, execution.error) == ("cancelled", "cancelled before it started")
    else:
        assert not Execution.objects.filter(job=doomed).exists()
    others = Job.objects.exclude(pk=doomed.pk)
    assert set(others.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}


@pytest.mark.usefixtures("full_batches")
def test_a_cancel_request_the_worker_has_not_seen_reaches_a_claimed_job_as_a_running_ones():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(PREFETCH)]
    late = jobs[4]

    def cancel_late(sender, job, **kwargs):
        if job.pk == jobs[2].pk:
            assert Job.objects.get(pk=late.pk).cancel()

    with on_job_started(cancel_late):
        run_worker("echo")
    late.refresh_from_db()
    # Claimed ahead (PostgreSQL): running, so asked to abort; this handler never looks,
    # and ends before the heartbeat's next look. Elsewhere: still queued, cancelled at once.
    assert late.status == (JobStatus.SUCCEEDED if connection.vendor == "postgresql" else JobStatus.CANCELLED)
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}
    assert not get_redis().smembers(topic_keys("echo").abort)  # the request went with its job


@pytest.mark.usefixtures("full_batches")
def test_a_stopping_worker_puts_its_batch_back_uncounted():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3 * PREFETCH)]
    stopping = Worker(topics=["echo"], burst=True, install_signals=False)

    batch: list[str] = []
    announced: set = set()  # every claim announces its job's start

    def stop_on_third(sender, job, **kwargs):
        announced.add(job.pk)
        if job.pk == jobs[2].pk:
            batch.extend(stopping.readahead.batch)
            stopping.stop()

    with on_job_started(stop_on_third):
        assert stopping.run() == 0
    done = set(Job.objects.filter(status=JobStatus.SUCCEEDED).values_list("pk", flat=True))
    if connection.vendor == "postgresql":
        # The third job was claimed, with the next ones, by the second's success: none started.
        assert done == {j.pk for j in jobs[:2]}
        assert len(announced - done) == PREFETCH  # claimed, never run
    else:
        # The third job was claimed as it started, and ran; the ids leased after it never did.
        assert done == {j.pk for j in jobs[:3]}
        assert len(batch) >= PREFETCH - 3
    rest = Job.objects.exclude(pk__in=done)
    assert set(rest.values_list("status", "attempts", "worker_id")) == {(JobStatus.QUEUED, 0, "")}
    assert not Execution.objects.filter(job__in=rest).exists()
    assert sorted(engine.queue_ids("echo")) == sorted(str(pk) for pk in rest.values_list("pk", flat=True))
    assert engine.depths("echo")["leased"] == 0

    run_worker("echo")
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    assert Execution.objects.count() == len(jobs)  # each job ran once


def test_a_dead_workers_batch_is_queued_again_by_the_reaper():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(4)]
    ahead = ReadAhead()
    lock = TopicLock("echo", token="prefetch-test")
    assert lock.acquire(limit=1)
    first = ahead.next_id("echo", lock.token, 4)
    assert first == str(jobs[0].pk) and len(ahead.batch) == 3
    # The worker dies here: nothing renews the leases; once they expire the reaper runs.
    expired = engine.claim_expired("echo", grace_seconds=0, now_ms=2**50)
    assert sorted(expired) == sorted(str(j.pk) for j in jobs)
    for job_id in expired:
        assert recover("echo", job_id) == "already queued"
    assert sorted(engine.queue_ids("echo")) == sorted(str(j.pk) for j in jobs)
    assert set(Job.objects.values_list("status", "attempts")) == {(JobStatus.QUEUED, 0)}


def test_the_heartbeat_renews_a_batchs_leases_and_a_lost_one_is_skipped():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(4)]
    beating = Worker(topics=["echo"], install_signals=False)
    lock = TopicLock("echo", token="prefetch-test")
    assert lock.acquire(limit=1)
    ahead = beating.readahead
    assert ahead.next_id("echo", lock.token, 4) == str(jobs[0].pk)
    r = get_redis()
    deadline = {i: r.zscore(topic_keys("echo").leases, i) for i in ahead.batch}
    engine.remove("echo", str(jobs[2].pk))  # as a cancel does: its lease is gone
    with jobqueue_settings(LEASE_SECONDS=3600):
        Heartbeat(beating).beat()
    for job in (jobs[1], jobs[3]):
        assert r.zscore(topic_keys("echo").leases, str(job.pk)) > deadline[str(job.pk)] + 3000 * 1000
    assert r.zscore(topic_keys("echo").leases, str(jobs[2].pk)) is None
    assert ahead.next_id("echo", lock.token, 4) == str(jobs[1].pk)
    assert ahead.next_id("echo", lock.token, 4) == str(jobs[3].pk)  # the lost one skipped
    assert ahead.batch == ()


@pytest.mark.usefixtures("full_batches", "no_flow_options")
def test_a_topic_with_flow_options_leases_one_id_per_call(monkeypatch):
    with jobqueue_settings(TOPIC_OPTIONS={"echo": {"key_concurrency": 100}}):
        jobs = [Job.objects.enqueue("echo", {"i": i}, key=f"k{i}") for i in range(6)]
        popped: list[int] = []
        original = engine.flow.pop

        def counting_pop(topic, lim, count, *args, **kwargs):
            popped.append(count)
            return original(topic, lim, count, *args, **kwargs)

        monkeypatch.setattr(engine.flow, "pop", counting_pop)
        run_worker("echo")
    assert set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)) == {
        JobStatus.SUCCEEDED
    }
    assert popped and set(popped) == {1}


def test_a_batch_of_another_topic_goes_back_before_a_call_for_this_one():
    echo = [Job.objects.enqueue("echo", {"i": i}) for i in range(3)]
    other = Job.objects.enqueue("other", {})
    ahead = ReadAhead()
    assert ahead.next_id("echo", "", 3) == str(echo[0].pk)
    assert ahead.next_id("other", "", 3) == str(other.pk)
    assert engine.queue_ids("echo") == [str(echo[1].pk), str(echo[2].pk)]
    assert set(Job.objects.filter(pk__in=[j.pk for j in echo[1:]]).values_list("status", flat=True)) == {
        JobStatus.QUEUED
    }
    assert ahead.batch == ()


@pytest.mark.parametrize("held_as", ["next", "batch"])
def test_a_job_given_back_that_another_worker_runs_keeps_running(held_as):
    # After a loss of Redis's data the resync queues a leased id again: another worker
    # may pop and claim it while this one still holds it.
    first = Job.objects.enqueue("echo", {"i": 1})
    Job.objects.enqueue("echo", {"i": 2})
    ahead = ReadAhead()
    if held_as == "next":
        [job_id] = engine.pop("echo")
        ahead.lease(job_id, "echo")
    else:
        assert ahead.next_id("echo", "", 2) == str(first.pk)
        [job_id] = ahead.batch
    assert claim(job_id, "another-worker", 1) is not None
    ahead.give_back()
    row = Job.objects.get(pk=job_id)
    assert (row.status, row.worker_id, row.attempts) == (JobStatus.RUNNING, "another-worker", 1)
    assert not Execution.objects.filter(job_id=job_id).exists()  # not recorded as lost
    assert job_id in {i.decode() for i in get_redis().zrange(topic_keys("echo").leases, 0, -1)}
    assert job_id not in engine.queue_ids("echo")


@pytest.mark.usefixtures("full_batches")
def test_no_success_is_acknowledged_before_it_is_recorded(monkeypatch):
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3 * PREFETCH)]
    acked: list[str] = []
    original = engine.acks_and_pop

    def acks_and_pop(topic, finished, *args, **kwargs):
        ids = [job_id for job_id, _entity, _tally in finished]
        recorded = Job.objects.filter(pk__in=ids, status=JobStatus.SUCCEEDED)
        assert recorded.count() == len(ids), f"acknowledged before recorded: {ids}"
        assert Execution.objects.filter(job__in=ids, outcome="succeeded").count() == len(ids)
        acked.extend(ids)
        return original(topic, finished, *args, **kwargs)

    monkeypatch.setattr(engine, "acks_and_pop", acks_and_pop)
    run_worker("echo")
    assert sorted(acked) == sorted(str(job.pk) for job in jobs)  # each acknowledged once
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}


@pytest.mark.parametrize("moved_on", [True, False])
def test_the_heartbeat_warns_of_a_reclaimed_lease_only_while_its_job_still_runs(monkeypatch, caplog, moved_on):
    """The heartbeat reads the running job, then renews its lease: between the two the
    worker may have finished it (its lease acknowledged) and moved on. That job was not
    reclaimed and its result is not discarded: no warning. A lease gone while the job
    still runs is a reclaim, and is said."""
    job = Job.objects.enqueue("echo", {})
    beating = Worker(topics=["echo"], install_signals=False)
    lock = TopicLock("echo", token="prefetch-test")
    assert lock.acquire(limit=1)
    assert beating.readahead.next_id("echo", lock.token, 1) == str(job.pk)
    beating.current = job
    renew = engine.extend_leases

    def meanwhile(topic, ids):
        engine.remove("echo", str(job.pk))  # its lease is gone: acknowledged, or reclaimed
        if moved_on:
            beating.current = None
        return renew(topic, ids)

    monkeypatch.setattr(engine, "extend_leases", meanwhile)
    caplog.set_level("WARNING", logger="jobqueue")
    Heartbeat(beating).beat()
    warned = [r for r in caplog.records if "was reclaimed" in r.getMessage()]
    assert len(warned) == (0 if moved_on else 1)


# -- held successes (PostgreSQL: a batch is claimed at once, its successes recorded at once) --


@pytest.mark.usefixtures("full_batches")
def test_successes_held_before_a_failure_are_recorded_before_the_worker_waits():
    jobs = [Job.objects.enqueue("flaky", {"succeed_on": 2 if i == 3 else 1}) for i in range(6)]
    retried = jobs[3]
    seen: list[dict] = []

    def on_second_attempt(sender, job, **kwargs):
        if job.pk == retried.pk and job.attempts == 2:  # the retry, due 0.05 s after its failure
            others = Job.objects.exclude(pk=retried.pk)
            seen.append(dict(Counter(others.values_list("status", flat=True))))

    with on_job_started(on_second_attempt):
        run_worker("flaky")
    assert seen == [{JobStatus.SUCCEEDED: 5}]
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCEEDED}
    outcomes = Counter(Execution.objects.values_list("job_id", "outcome"))
    assert outcomes == {**{(j.pk, "succeeded"): 1 for j in jobs}, (retried.pk, "retry"): 1}
    assert engine.depths("flaky") == {"queued": 0, "leased": 0, "scheduled": 0}


@pytest.mark.usefixtures("full_batches")
def test_a_worker_that_stops_while_holding_successes_records_them_and_puts_the_rest_back():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(2 * PREFETCH)]
    stopping = Worker(topics=["echo"], burst=True, install_signals=False)
    finish = stopping._finish
    held: list[int] = []

    def stop_while_holding(job, execution, outcome):
        finish(job, execution, outcome)
        if stopping.readahead.held and not stopping.stopping:
            held.append(len(stopping.readahead.held))
            stopping.stop()  # as a SIGTERM between two jobs does

    stopping._finish = stop_while_holding
    assert stopping.run() == 0
    # Elsewhere than on PostgreSQL each success is recorded as it comes: nothing is held.
    assert held == ([1] if connection.vendor == "postgresql" else [])
    done = set(Job.objects.filter(status=JobStatus.SUCCEEDED).values_list("pk", flat=True))
    ran = set(Execution.objects.values_list("job_id", flat=True))
    assert done == ran and len(done) >= 3  # the held success recorded, with its Execution row
    rest = Job.objects.exclude(pk__in=done)
    assert rest.count() == len(jobs) - len(done)
    assert set(rest.values_list("status", "attempts", "worker_id")) <= {(JobStatus.QUEUED, 0, "")}
    assert engine.depths("echo") == {"queued": rest.count(), "leased": 0, "scheduled": 0}


def test_a_held_success_whose_job_moved_on_is_recorded_as_lost_and_the_others_stand():
    from jobqueue.transitions import attempt

    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(2)]
    claims = [claim(job_id, "w", 7) for job_id in engine.pop("echo", 2)]
    reclaimed = claims[1][0]
    next_job = attempt.NextJob(lambda: [], "w", 7, {}, may_hold=True)
    for job, execution in claims:
        execution.outcome, execution.finished_at = "succeeded", execution.started_at
        status = attempt.succeed(job, execution, job.payload, job.payload, defer_ack=True, next_job=next_job)
        assert status == (attempt.HELD if connection.vendor == "postgresql" else JobStatus.SUCCEEDED)
    if connection.vendor != "postgresql":
        return  # nothing is held elsewhere: each success was recorded as it came
    # Meanwhile its lease expired and the reaper queued it again (one attempt counted).
    Job.objects.filter(pk=reclaimed.pk).update(status=JobStatus.QUEUED, worker_id="")
    next_job.may_hold = False
    assert attempt.record_held(next_job) == {str(jobs[0].pk)}
    assert next_job.recorded == [claims[0][0]] and next_job.held == []
    assert Job.objects.get(pk=jobs[0].pk).status == JobStatus.SUCCEEDED
    assert Job.objects.get(pk=jobs[1].pk).status == JobStatus.QUEUED
    assert list(Execution.objects.filter(job_id=jobs[1].pk).values_list("outcome", flat=True)) == ["lost"]


# -- the pop behind the wait --------------------------------------------------------------


def idle_worker() -> Worker:
    """A worker that holds the echo slot and found nothing to do (as before its wait)."""
    w = Worker(topics=["echo"], install_signals=False)
    w.topics = ["echo"]
    w._take_slots()
    assert set(w.slots) == {"echo"}
    assert w._fetch() == (None, "")
    w._next_maintenance = time.monotonic() + 60  # its wait is then a whole IDLE_WAIT_SECONDS
    return w


def test_a_waiting_worker_leases_what_woke_it_in_the_same_round_trip():
    w = idle_worker()
    job = Job.objects.enqueue("echo")  # its push leaves a wake token
    calls = RedisCalls()
    with calls.counting():
        w._wait()
    assert calls.count == 1 and calls.names == {"BLPOP+EVALSHA": 1}, calls.names  # BLPOP and the pop, one trip
    assert w.readahead.batch == (str(job.pk),)
    assert engine.queue_ids("echo") == [] and get_redis().zscore(topic_keys("echo").leases, str(job.pk))
    with calls.counting():
        assert w._fetch() == (str(job.pk), "echo")  # taken from the batch: no call
    assert calls.count == 1


def test_a_job_pushed_while_the_worker_waits_is_leased_as_it_wakes():
    w = idle_worker()
    pushed = {}

    def push_later():
        time.sleep(0.3)
        pushed["job"] = Job.objects.enqueue("echo")
        from django.db import connections

        connections.close_all()

    thread = threading.Thread(target=push_later)
    thread.start()
    try:
        w._wait()  # up to a second
    finally:
        thread.join()
    assert w.readahead.batch == (str(pushed["job"].pk),)


def test_a_worker_woken_with_its_next_job_leased_runs_it_in_the_same_pass():
    w = idle_worker()
    pushed = {}

    def push_later():
        time.sleep(0.3)
        with transaction.atomic():  # pushed once committed: the claim cannot come before the row
            pushed["job"] = Job.objects.enqueue("echo")
        from django.db import connections

        connections.close_all()

    thread = threading.Thread(target=push_later)
    thread.start()
    try:
        assert w._iteration() is True  # waits, is woken with the job leased, and runs it
    finally:
        thread.join()
    assert w.processed == 1 and w.readahead.batch == ()
    assert Job.objects.get(pk=pushed["job"].pk).status == JobStatus.SUCCEEDED


def test_a_worker_asked_to_stop_during_its_wait_runs_nothing_it_leased(monkeypatch):
    w = idle_worker()
    pushed = {}
    real = engine.wait_and_pop

    def stopped_meanwhile(*args):
        pushed["job"] = job = Job.objects.enqueue("echo")  # it comes while the worker waits
        ids = real(*args)
        assert ids == [str(job.pk)]
        w.stop()  # as a SIGTERM arriving then does
        return ids

    monkeypatch.setattr(engine, "wait_and_pop", stopped_meanwhile)
    assert w._iteration() is True
    job = pushed["job"]
    assert w.processed == 0 and w.readahead.batch == (str(job.pk),)
    w.readahead.give_back()  # what run() does on the way out
    assert engine.queue_ids("echo") == [str(job.pk)]
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


@pytest.mark.usefixtures("full_batches")
def test_a_worker_stopping_after_its_wait_leased_jobs_puts_them_back_unstarted():
    w = idle_worker()
    w.readahead.observe(0.001)  # a pace seen: the pop leases a batch, not one id
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3)]
    w._wait()
    assert w.readahead.batch == tuple(str(j.pk) for j in jobs)
    w.readahead.give_back()  # what run() does on the way out
    assert engine.queue_ids("echo") == [str(j.pk) for j in jobs]
    assert set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", "attempts")) == {
        (JobStatus.QUEUED, 0)
    }


def test_the_pop_behind_the_wait_leases_nothing_of_a_paused_topic_and_survives_a_lost_script(redis_client):
    w = idle_worker()
    engine.set_paused("echo", True)
    job = Job.objects.enqueue("echo")
    w._wait()
    assert w.readahead.batch == () and engine.queue_ids("echo") == [str(job.pk)]
    engine.set_paused("echo", False)
    redis_client.script_flush()  # as after a restart: the pipelined EVALSHA is answered NOSCRIPT
    engine.get_redis().rpush(topic_keys("echo").wake, "1")
    w._wait()
    assert w.readahead.batch == (str(job.pk),)


def test_a_worker_with_a_batch_or_several_slots_only_waits():
    w = idle_worker()
    w.readahead.adopt("echo", ["not-a-job"])
    assert not w._may_pop_behind_wait("echo")
    with pytest.raises(RuntimeError):
        w.readahead.adopt("echo", ["another"])
    w.readahead.give_back_batch()
    assert w._may_pop_behind_wait("echo")
    engine.flow.configure("echo", engine.flow.FlowLimits(fair=True))
    try:
        assert not w._may_pop_behind_wait("echo")  # a topic with flow options pops with its own script
    finally:
        engine.flow.configure("echo", None)
