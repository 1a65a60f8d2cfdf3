"""Engine safeguards: pops need a live slot; resync repairs what Redis missed."""

import uuid

from jobqueue import engine
from jobqueue.engine import TopicLock
from jobqueue.resync import resync


def test_pop_needs_a_live_slot_when_given_a_token():
    ids = [str(uuid.uuid4()) for _ in range(3)]
    engine.push("slotted", [(i, 0, None) for i in ids])
    lock = TopicLock("slotted", token="worker-a")

    assert engine.pop("slotted", 1, slot_token="worker-a") == []  # no slot taken yet
    assert lock.acquire(limit=1, ttl=30)
    assert engine.pop("slotted", 1, slot_token="worker-a") == [ids[0]]

    lock.release()  # e.g. the slot expired, or Redis lost it with its data
    assert engine.pop("slotted", 1, slot_token="worker-a") == []
    assert engine.ack_and_pop("slotted", ids[0], None, 1, slot_token="worker-a") == []
    assert engine.queue_ids("slotted") == ids[1:]  # nothing was taken without a slot


def test_an_expired_slot_stops_pops(redis_client):
    ids = [str(uuid.uuid4()) for _ in range(2)]
    engine.push("slotted", [(i, 0, None) for i in ids])
    lock = TopicLock("slotted", token="worker-a")
    assert lock.acquire(limit=1, ttl=30, now_ms=1_000)
    # The slot expired at 31,000 ms; popping at 40,000 ms must fail.
    assert engine.pop("slotted", 1, now_ms=40_000, slot_token="worker-a") == []
    assert engine.pop("slotted", 1, now_ms=20_000, slot_token="worker-a") == [ids[0]]


def test_pop_without_a_token_ignores_slots():
    job_id = str(uuid.uuid4())
    engine.push("slotted", [(job_id, 0, None)])
    assert engine.pop("slotted", 1) == [job_id]


def test_resync_repairs_a_priority_redis_missed(db):
    from jobqueue.models import Job

    job = Job.objects.enqueue("echo", {"n": 1})
    other = Job.objects.enqueue("echo", {"n": 2})
    engine.push("echo", [(str(job.pk), 0, None), (str(other.pk), 0, None)])
    # The database says 50, Redis still has 0 (a change that raced the push).
    Job.objects.filter(pk=other.pk).update(priority=50)
    report = resync(["echo"])
    assert report.reprioritised == {"echo": 1}
    assert engine.queue_ids("echo")[0] == str(other.pk)
