"""``resync()``: the database is the truth; a flushed Redis is rebuilt from it."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from django.conf import settings as django_settings
from django.db import transaction

from jobqueue import engine
from jobqueue.engine import TopicKeys
from jobqueue.models import Job, JobStatus, Topic
from jobqueue.resync import resync
from tests.states import force

pytestmark = pytest.mark.django_db(transaction=True)


def ids(jobs):
    return [str(job.pk) for job in jobs]


def test_after_flushdb_the_pop_order_is_what_it_was(redis_client):
    with transaction.atomic():
        Job.objects.enqueue("echo", {"n": 0})
        Job.objects.enqueue("echo", {"n": 1}, priority=5)
        Job.objects.enqueue_many(
            [{"topic": "echo", "payload": {"n": n}, "priority": n % 3 - 1} for n in range(2, 40)]
            + [{"topic": "other", "payload": {"n": n}, "priority": -n} for n in range(5)]
        )
        Job.objects.enqueue("echo", {"n": 40}, entity_id="e40")
        Job.objects.enqueue("echo", {"n": 41}, priority=1)
    Job.objects.enqueue("echo", {"n": 42}, entity_id="e40", priority=1)  # raises e40 to 1
    Job.objects.get(topic_id="echo", payload__n=3).set_priority(5)
    Job.objects.enqueue_many([("echo", {"n": 43}), ("echo", {"n": 44})])
    before = {topic: engine.queue_ids(topic) for topic in ("echo", "other")}
    assert len(before["echo"]) == 44 and len(before["other"]) == 5

    redis_client.flushdb()
    assert engine.queue_ids("echo") == []
    report = resync()
    assert report.pushed == {"echo": 44, "other": 5}
    assert {topic: engine.queue_ids(topic) for topic in ("echo", "other")} == before
    # Entity mappings came back too: a priority change by entity finds the job.
    e40 = Job.objects.get(entity_id="e40")
    assert engine.change_priority("echo", None, 100, entity_id="e40") == str(e40.pk)
    # The pop order is the queue order.
    popped = engine.pop("echo", count=100)
    assert popped[1:] == [i for i in before["echo"] if i != popped[0]]
    # The topics are known again, so maintenance finds them.
    assert {"echo", "other"} <= set(engine.known_topics())


def test_resync_twice_changes_nothing_the_second_time():
    Job.objects.enqueue_many([("echo", {}), {"topic": "echo", "delay": 60}])
    engine.get_redis().flushdb()
    assert resync(["echo"]).total() == 2
    order = engine.queue_ids("echo")
    second = resync(["echo"])
    assert second.total() == 0 and second.leases == {}
    assert engine.queue_ids("echo") == order


def test_stale_ids_are_dropped():
    kept = Job.objects.enqueue("echo")
    cancelled = Job.objects.enqueue("echo")
    assert force(cancelled, (JobStatus.QUEUED,), status=JobStatus.CANCELLED)  # Redis not told
    ghost = str(uuid.uuid4())
    engine.push("echo", [(ghost, 9, None)])
    later = Job.objects.enqueue("echo", delay=600)
    assert force(later, (JobStatus.SCHEDULED,), status=JobStatus.CANCELLED)
    ghost_scheduled = str(uuid.uuid4())
    engine.schedule("echo", [(ghost_scheduled, time.time() + 60, 0, None)])

    report = resync(["echo"])
    assert report.dropped == {"echo": 4}
    assert report.pushed == {}
    assert engine.queue_ids("echo") == ids([kept])
    assert engine.depths("echo")["scheduled"] == 0
    assert engine.get_redis().hgetall(TopicKeys("echo").schedprio) == {}


def test_queued_rows_missing_from_redis_are_pushed_behind_the_ones_still_there():
    first = Job.objects.enqueue("echo")
    lost = Job.objects.enqueue("echo", priority=3)
    engine.remove("echo", str(lost.pk))
    report = resync(["echo"])
    assert report.pushed == {"echo": 1}
    assert engine.queue_ids("echo") == ids([lost, first])


def test_a_popped_job_not_yet_marked_running_is_not_pushed_twice():
    job = Job.objects.enqueue("echo")
    assert engine.pop("echo") == [str(job.pk)]  # a worker took it; its row is still "queued"
    assert resync(["echo"]).total() == 0
    assert engine.queue_ids("echo") == []
    assert engine.depths("echo")["leased"] == 1


def test_scheduled_rows_are_rescheduled(redis_client):
    soon = Job.objects.enqueue("echo", delay=30, priority=4, entity_id="s")
    later = Job.objects.enqueue("echo", delay=3600)
    due = {str(j.pk): int(Job.objects.get(pk=j.pk).run_after.timestamp() * 1000) for j in (soon, later)}
    redis_client.flushdb()
    report = resync(["echo"])
    assert report.scheduled == {"echo": 2}
    k = TopicKeys("echo")
    assert {i.decode(): int(s) for i, s in redis_client.zrange(k.scheduled, 0, -1, withscores=True)} == due
    assert redis_client.hget(k.schedprio, str(soon.pk)) == b"4"
    assert redis_client.hget(k.entities, "s") == str(soon.pk).encode()
    assert engine.promote_due("echo", now_ms=due[str(soon.pk)]) == [str(soon.pk)]


def test_running_rows_without_a_lease_get_one(redis_client):
    lost = Job.objects.enqueue("echo")
    leased = Job.objects.enqueue("echo")
    engine.pop("echo", count=2, lease_seconds=600, now_ms=int(time.time() * 1000))
    for job in (lost, leased):
        assert force(job, (JobStatus.QUEUED,), status=JobStatus.RUNNING)
    k = TopicKeys("echo")
    kept_deadline = redis_client.zscore(k.leases, str(leased.pk))
    redis_client.zrem(k.leases, str(lost.pk))

    report = resync(["echo"])
    assert report.leases == {"echo": 1}
    now_ms = time.time() * 1000
    lease_ms = django_settings.JOBQUEUE["LEASE_SECONDS"] * 1000
    assert now_ms < redis_client.zscore(k.leases, str(lost.pk)) <= now_ms + lease_ms
    assert redis_client.zscore(k.leases, str(leased.pk)) == kept_deadline
    # Once that lease expires, the reaper claims the job like any other.
    assert engine.claim_expired("echo", now_ms=int(now_ms + lease_ms + 1)) == [str(lost.pk)]


def test_a_running_row_still_in_the_queue_is_taken_out_and_leased():
    job = Job.objects.enqueue("echo")
    assert force(job, (JobStatus.QUEUED,), status=JobStatus.RUNNING)
    report = resync(["echo"])
    assert report.dropped == {"echo": 1} and report.leases == {"echo": 1}
    assert engine.depths("echo") == {"queued": 0, "leased": 1, "scheduled": 0}


def test_the_paused_flag_follows_the_topic_row(redis_client):
    Job.objects.enqueue("echo")
    topic = Topic.objects.get(name="echo")
    topic.set_paused(True)
    assert engine.is_paused("echo")
    redis_client.flushdb()
    resync(["echo"])
    assert engine.is_paused("echo")
    assert engine.pop("echo") == []
    # A flag Redis kept for a topic resumed in the database goes too.
    Topic.objects.filter(name="echo").update(is_paused=False)
    resync(["echo"])
    assert not engine.is_paused("echo")
    assert len(engine.pop("echo")) == 1


def test_resync_of_some_topics_leaves_the_others_alone():
    Job.objects.enqueue("echo")
    Job.objects.enqueue("other")
    engine.get_redis().flushdb()
    assert resync(["other"]).pushed == {"other": 1}
    assert engine.queue_ids("echo") == []


def test_the_engine_rebuilds_a_topic_from_plain_rows(redis_client):
    """The engine's half of a resync takes plain values, no model: ids, priorities,
    entity ids, due times."""
    first, second, later, running = (uuid.uuid4() for _ in range(4))
    ghost = str(uuid.uuid4())
    engine.push("echo", [(ghost, 0, None)])
    due = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)

    redis_side = engine.TopicResync("echo", paused=True)
    report = engine.ResyncReport()
    redis_side.apply(
        engine.TopicRows(queued=[(first, 5, "e-1"), (second, 0, None)], scheduled=[(later, due, 2, None)],
                         running=[running]),
        report,
    )
    assert (report.pushed, report.scheduled, report.dropped, report.leases) == (
        {"echo": 2}, {"echo": 1}, {"echo": 1}, {"echo": 1}
    )
    assert engine.queue_ids("echo") == [str(first), str(second)]
    k = TopicKeys("echo")
    assert redis_client.zscore(k.scheduled, str(later)) == due.timestamp() * 1000
    assert redis_client.zscore(k.leases, str(running)) is not None
    assert redis_client.hget(k.entities, "e-1") == str(first).encode()
    assert engine.is_paused("echo")
