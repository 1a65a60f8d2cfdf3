"""The worker's read-ahead: every move from every stage, and what each does in Redis and
the database."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from jobqueue import engine
from jobqueue.engine import TopicLock, get_redis, topic_keys
from jobqueue.models import Execution, Job, JobStatus
from jobqueue.worker.lifecycle import NextJob, claim
from jobqueue.worker.readahead import IllegalMove, ReadAhead, Stage

pytestmark = pytest.mark.django_db(transaction=True)

# The moves that only change the stage, and where each one leads from where it is allowed.
LEGAL = {
    (Stage.EMPTY, "lease"): Stage.LEASED,
    (Stage.LEASED, "claim"): Stage.CLAIMED,
    (Stage.LEASED, "take_lease"): Stage.EMPTY,
    (Stage.CLAIMED, "take"): Stage.EMPTY,
}
MOVES = ["lease", "claim", "take_lease", "take"]

LEASED_ID = str(uuid.uuid4())
CLAIMED_JOB = Job(pk=uuid.UUID(LEASED_ID), topic_id="echo")
CLAIMED_EXECUTION = Execution(job=CLAIMED_JOB, attempt=1)


def at(stage: Stage) -> ReadAhead:
    """A read-ahead brought to ``stage`` by legal moves."""
    readahead = ReadAhead()
    if stage is not Stage.EMPTY:
        readahead.lease(LEASED_ID, "echo")
    if stage is Stage.CLAIMED:
        readahead.claim(CLAIMED_JOB, CLAIMED_EXECUTION)
    assert readahead.stage is stage
    return readahead


def make(readahead: ReadAhead, move: str):
    if move == "lease":
        return readahead.lease(str(uuid.uuid4()), "echo")
    if move == "claim":
        return readahead.claim(CLAIMED_JOB, CLAIMED_EXECUTION)
    return getattr(readahead, move)()


def held(readahead: ReadAhead) -> tuple:
    """What the read-ahead holds, whatever its stage (the batch aside)."""
    return readahead.stage, readahead.leased_id, readahead.unacked


def leased(topic: str = "echo") -> list[str]:
    return sorted(i.decode() for i in get_redis().zrange(topic_keys(topic).leases, 0, -1))


@pytest.fixture
def slot():
    lock = TopicLock("echo", token="readahead-test")
    assert lock.acquire(limit=1)
    return lock


# -- the stages -----------------------------------------------------------------------------


def test_a_new_read_ahead_holds_nothing():
    readahead = ReadAhead()
    assert held(readahead) == (Stage.EMPTY, None, ())
    with pytest.raises(IllegalMove, match="cannot take the next job: it is EMPTY, not CLAIMED"):
        readahead.take()


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("move", MOVES)
def test_every_move_from_every_stage(stage, move):
    readahead = at(stage)
    before = held(readahead)
    if (stage, move) not in LEGAL:
        with pytest.raises(IllegalMove):
            make(readahead, move)
        assert held(readahead) == before  # an illegal move changes nothing
        return
    returned = make(readahead, move)
    assert readahead.stage is LEGAL[stage, move]
    if move == "take_lease":
        assert returned == (LEASED_ID, "echo")
    elif move == "take":
        assert returned == (CLAIMED_JOB, CLAIMED_EXECUTION)
    else:
        assert returned is None
    assert (readahead.leased_id is not None) == (readahead.stage is Stage.LEASED)


def test_the_lease_is_held_until_it_is_claimed_or_taken():
    readahead = ReadAhead()
    readahead.lease(LEASED_ID, "echo")
    assert readahead.leased_id == LEASED_ID
    readahead.claim(CLAIMED_JOB, CLAIMED_EXECUTION)
    assert readahead.leased_id is None
    assert readahead.take() == (CLAIMED_JOB, CLAIMED_EXECUTION)
    assert held(readahead) == (Stage.EMPTY, None, ())
    with pytest.raises(IllegalMove, match="cannot take the lease of the next job: it is EMPTY, not LEASED"):
        readahead.take_lease()


def test_the_held_acknowledgement_does_not_depend_on_the_stage():
    job = Job(pk=uuid.uuid4(), topic_id="echo")
    readahead = at(Stage.CLAIMED)
    readahead.hold_ack(job)
    assert readahead.stage is Stage.CLAIMED and readahead.unacked == (job,)
    assert readahead.take_ack() is job
    assert readahead.unacked == () and readahead.take_ack() is None
    assert readahead.stage is Stage.CLAIMED


# -- with Redis and the database ------------------------------------------------------------


def test_lease_next_acknowledges_the_held_success_in_the_same_call(slot):
    first, second = Job.objects.enqueue("echo", {"i": 1}), Job.objects.enqueue("echo", {"i": 2})
    assert engine.pop("echo", slot_token=slot.token) == [str(first.pk)]
    readahead = ReadAhead()
    readahead.hold_ack(first)
    assert leased() == [str(first.pk)]  # held, not acknowledged yet

    assert readahead.lease_next("echo", slot.token) == [str(second.pk)]
    assert held(readahead) == (Stage.LEASED, str(second.pk), ())
    assert leased() == [str(second.pk)]
    assert engine.queue_ids("echo") == []


def test_lease_next_acknowledges_a_held_success_of_another_topic_too(slot):
    # Held before the worker's slot changed: no later call of its topic would carry it.
    other = Job.objects.enqueue("other", {})
    nxt = Job.objects.enqueue("echo", {})
    assert engine.pop("other") == [str(other.pk)]
    readahead = ReadAhead()
    readahead.hold_ack(other)

    assert readahead.lease_next("echo", slot.token) == [str(nxt.pk)]
    assert held(readahead) == (Stage.LEASED, str(nxt.pk), ())
    assert leased("other") == []


def test_lease_next_with_nothing_queued_leases_nothing_but_sends_the_acknowledgement(slot):
    job = Job.objects.enqueue("echo", {})
    assert engine.pop("echo", slot_token=slot.token) == [str(job.pk)]
    readahead = ReadAhead()
    readahead.hold_ack(job)
    assert readahead.lease_next("echo", slot.token) == []
    assert held(readahead) == (Stage.EMPTY, None, ())
    assert leased() == []


def test_lease_next_without_redis_leases_nothing_and_keeps_the_acknowledgement(slot, monkeypatch):
    job = Job.objects.enqueue("echo", {})
    queued = Job.objects.enqueue("echo", {})
    assert engine.pop("echo", slot_token=slot.token) == [str(job.pk)]
    readahead = ReadAhead()
    readahead.hold_ack(job)

    def unreachable(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(engine, "acks_and_pop", unreachable)
    assert readahead.lease_next("echo", slot.token) == []
    assert held(readahead) == (Stage.EMPTY, None, (job,))
    assert engine.queue_ids("echo") == [str(queued.pk)]


@pytest.mark.parametrize("stage", [Stage.LEASED, Stage.CLAIMED])
def test_lease_next_is_refused_while_a_next_job_is_held(stage, slot):
    job = Job.objects.enqueue("echo", {})
    readahead = at(stage)
    with pytest.raises(IllegalMove):
        readahead.lease_next("echo", slot.token)
    assert engine.queue_ids("echo") == [str(job.pk)]  # nothing popped
    assert readahead.stage is stage


def test_held_successes_wait_for_the_next_call_which_acknowledges_them_all(slot):
    first, second, nxt = (Job.objects.enqueue("echo", {"i": i}) for i in range(3))
    assert sorted(engine.pop("echo", 2)) == sorted([str(first.pk), str(second.pk)])
    readahead = ReadAhead()
    readahead.hold_ack(first)
    readahead.hold_ack(second)
    assert readahead.unacked == (first, second)
    assert leased() == sorted([str(first.pk), str(second.pk)])  # nothing sent yet

    assert readahead.lease_next("echo", slot.token) == [str(nxt.pk)]
    assert held(readahead) == (Stage.LEASED, str(nxt.pk), ())
    assert leased() == [str(nxt.pk)]
    assert engine.metrics.read(["echo"])["echo"].counters["succeeded"] == 2


def offer(job_id: str | None = None, **after) -> NextJob:
    """A NextJob as the success statement leaves it (``job_id`` leased)."""
    leased_ids = [job_id] if job_id else []
    next_job = NextJob(lambda: leased_ids, "readahead-test", os.getpid(), {}, ids=leased_ids)
    for name, value in after.items():
        setattr(next_job, name, value)
    return next_job


def test_settle_keeps_the_job_the_statement_claimed():
    job = Job.objects.enqueue("echo", {})
    [job_id] = engine.pop("echo")
    claimed = claim(job_id, "readahead-test", os.getpid())
    readahead = ReadAhead()
    readahead.lease(job_id, "echo")
    readahead.settle(offer(job_id, claimed=[claimed]))
    assert readahead.stage is Stage.CLAIMED
    running, _execution = readahead.take()
    assert running.pk == job.pk and running.status == JobStatus.RUNNING


def test_settle_acknowledges_a_leased_job_cancelled_meanwhile():
    job = Job.objects.enqueue("echo", {})
    [job_id] = engine.pop("echo")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)  # why the statement could not claim it
    readahead = ReadAhead()
    readahead.lease(job_id, "echo")
    readahead.settle(offer(job_id))
    assert held(readahead) == (Stage.EMPTY, None, ())
    assert leased() == [] and engine.queue_ids("echo") == []
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_settle_leaves_a_stranded_job_to_its_lease():
    Job.objects.enqueue("echo", {})
    [job_id] = engine.pop("echo")
    readahead = ReadAhead()
    readahead.lease(job_id, "echo")
    readahead.settle(offer(job_id, stranded={job_id}))
    assert held(readahead) == (Stage.EMPTY, None, ())
    assert leased() == [job_id]


def test_settle_without_a_statement_keeps_the_lease_for_the_next_try():
    readahead = at(Stage.LEASED)
    readahead.settle(offer(None))
    assert held(readahead) == (Stage.LEASED, LEASED_ID, ())


def test_settle_of_a_claim_nothing_leased_is_refused():
    readahead = ReadAhead()
    with pytest.raises(IllegalMove):
        readahead.settle(offer(LEASED_ID))
    assert readahead.stage is Stage.EMPTY


def test_give_back_queues_a_claimed_job_again_uncounted_and_acknowledges_the_held_success():
    done, nxt = Job.objects.enqueue("echo", {}), Job.objects.enqueue("echo", {})
    assert engine.pop("echo") == [str(done.pk)]
    [job_id] = engine.pop("echo")
    claimed = claim(job_id, "readahead-test", os.getpid())
    assert claimed is not None
    readahead = ReadAhead()
    readahead.hold_ack(done)
    readahead.lease(job_id, "echo")
    readahead.claim(*claimed)

    readahead.give_back()
    assert held(readahead) == (Stage.EMPTY, None, ())
    row = Job.objects.get(pk=nxt.pk)
    assert (row.status, row.attempts, row.worker_id) == (JobStatus.QUEUED, 0, "")
    assert not Execution.objects.filter(job=nxt).exists()
    assert engine.queue_ids("echo") == [str(nxt.pk)]
    assert leased() == []


def test_give_back_returns_a_leased_job_to_its_queue():
    job = Job.objects.enqueue("echo", {})
    [job_id] = engine.pop("echo")
    readahead = ReadAhead()
    readahead.lease(job_id, "echo")
    readahead.give_back()
    assert held(readahead) == (Stage.EMPTY, None, ())
    assert engine.queue_ids("echo") == [str(job.pk)] and leased() == []
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_give_back_with_nothing_held_does_nothing():
    job = Job.objects.enqueue("echo", {})
    readahead = ReadAhead()
    readahead.give_back()
    assert held(readahead) == (Stage.EMPTY, None, ())
    assert engine.queue_ids("echo") == [str(job.pk)]


# -- several next jobs ------------------------------------------------------------------------


def queued_and_popped(n: int, slot) -> list[str]:
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(n)]
    ids = engine.pop("echo", n, slot_token=slot.token)
    assert ids == [str(j.pk) for j in jobs]
    return ids


def test_claimed_jobs_are_taken_in_order_and_the_stage_empties_after_the_last(slot):
    first, second, third = queued_and_popped(3, slot)
    claims = [claim(job_id, "readahead-test", os.getpid()) for job_id in (first, second, third)]
    readahead = ReadAhead()
    readahead.lease(first, "echo", second, third)
    assert readahead.leased_ids == [first, second, third]
    readahead.claim(*claims[0], *claims[1:])
    assert readahead.claimed_ids() == {"echo": [first, second, third]}
    assert readahead.held_leases() == {"echo": [first, second, third]}
    for job_id in (first, second, third):
        assert readahead.stage is Stage.CLAIMED
        job, _execution = readahead.take()
        assert str(job.pk) == job_id
    assert readahead.stage is Stage.EMPTY and readahead.claimed_ids() == {}


def test_take_lease_hands_over_the_first_and_puts_the_others_before_the_batch(slot):
    ids = queued_and_popped(4, slot)
    readahead = ReadAhead()
    assert readahead.next_id("echo", slot.token, 1) is None  # nothing left: no batch yet
    readahead.lease(ids[0], "echo", ids[1], ids[2])
    assert readahead.take_lease() == (ids[0], "echo")
    assert readahead.stage is Stage.EMPTY and readahead.batch == (ids[1], ids[2])
    assert readahead.next_id("echo", slot.token) == ids[1]


def test_lease_next_leases_the_whole_batch(slot):
    ids = [str(Job.objects.enqueue("echo", {"i": i}).pk) for i in range(5)]
    readahead = ReadAhead()
    assert readahead.next_id("echo", slot.token, 5) == ids[0]
    assert readahead.batch == tuple(ids[1:])
    assert readahead.lease_next("echo", slot.token, 5) == ids[1:]
    assert readahead.stage is Stage.LEASED and readahead.batch == ()
    assert readahead.held_leases() == {"echo": ids[1:]}


def test_lease_next_skips_the_batch_ids_whose_lease_was_lost(slot):
    ids = [str(Job.objects.enqueue("echo", {"i": i}).pk) for i in range(4)]
    readahead = ReadAhead()
    assert readahead.next_id("echo", slot.token, 4) == ids[0]
    readahead.lost([ids[2]])
    assert readahead.lease_next("echo", slot.token, 4) == [ids[1], ids[3]]


def test_a_cancel_request_seen_for_a_claimed_job_is_answered_once(slot):
    first, second = queued_and_popped(2, slot)
    claims = [claim(job_id, "readahead-test", os.getpid()) for job_id in (first, second)]
    readahead = ReadAhead()
    readahead.lease(first, "echo", second)
    readahead.claim(*claims[0], claims[1])
    readahead.cancelled([second])
    job, _ = readahead.take()
    assert not readahead.was_cancelled(job)
    job, _ = readahead.take()
    assert readahead.was_cancelled(job) and not readahead.was_cancelled(job)


def test_give_back_queues_every_claimed_job_again_uncounted(slot):
    ids = queued_and_popped(3, slot)
    claims = [claim(job_id, "readahead-test", os.getpid()) for job_id in ids]
    readahead = ReadAhead()
    readahead.lease(ids[0], "echo", *ids[1:])
    readahead.claim(*claims[0], *claims[1:])
    readahead.take()  # the first one runs (and is recorded by the worker, not here)

    readahead.give_back()
    assert readahead.stage is Stage.EMPTY
    rows = Job.objects.filter(pk__in=ids[1:])
    assert set(rows.values_list("status", "attempts", "worker_id")) == {(JobStatus.QUEUED, 0, "")}
    assert sorted(engine.queue_ids("echo")) == sorted(ids[1:])
    assert leased() == [ids[0]]


def test_give_back_returns_every_leased_job_to_its_queue(slot):
    ids = queued_and_popped(3, slot)
    readahead = ReadAhead()
    readahead.lease(ids[0], "echo", *ids[1:])
    readahead.give_back()
    assert readahead.stage is Stage.EMPTY and readahead.batch == ()
    assert sorted(engine.queue_ids("echo")) == sorted(ids) and leased() == []


def test_settle_keeps_the_claimed_jobs_and_gives_back_the_others(slot):
    ids = queued_and_popped(3, slot)
    Job.objects.filter(pk=ids[1]).update(status=JobStatus.CANCELLED)  # why the statement could not claim it
    claims = [claim(ids[2], "readahead-test", os.getpid()), claim(ids[0], "readahead-test", os.getpid())]
    readahead = ReadAhead()
    readahead.lease(ids[0], "echo", *ids[1:])
    readahead.settle(offer(ids[0], ids=ids, claimed=[claims[1], claims[0]]))  # in lease order
    assert [str(job.pk) for job, _ in (readahead.take(), readahead.take())] == [ids[0], ids[2]]
    assert leased() == sorted([ids[0], ids[2]])  # the cancelled one acknowledged
