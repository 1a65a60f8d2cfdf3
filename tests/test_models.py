"""Model constraints and the state transitions of a job, in the database and in Redis."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from jobqueue import engine
from jobqueue.exceptions import DuplicateJob, InvalidJob, InvalidTransition
from jobqueue.models import Job, JobStatus, Topic
from jobqueue.transitions.guard import move
from tests.states import force

# Real commits, so on-commit pushes run as in production. Tests that need no commit are
# marked plain django_db instead: flushing the database after each test is slow.
pytestmark = pytest.mark.django_db(transaction=True)


def ids(jobs):
    return [str(job.pk) for job in jobs]


def set_status(job, old, new):
    assert force(job, (old,), status=new)


# -- constraints ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "value"), [("priority", 101), ("priority", -101), ("progress", 101)])
def test_out_of_range_values_written_directly_are_refused_by_the_database(field, value):
    job = Job.objects.enqueue("echo")
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(**{field: value})
    Job.objects.filter(pk=job.pk).update(priority=100, progress=100)  # the bounds themselves are fine


@pytest.mark.django_db
def test_topic_constraints():
    with pytest.raises(IntegrityError), transaction.atomic():
        Topic.objects.create(name="bad-prio", default_priority=500)
    with pytest.raises(IntegrityError), transaction.atomic():
        Topic.objects.create(name="no-slots", concurrency=0)


@pytest.mark.django_db
def test_one_active_job_per_entity_but_many_finished_ones():
    for status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SUCCEEDED):
        Job.objects.create(topic_id="echo", entity_id="e", status=status)
    Job.objects.create(topic_id="echo", entity_id="e", status=JobStatus.QUEUED)
    Job.objects.create(topic_id="other", entity_id="e", status=JobStatus.QUEUED)  # another topic
    for status in (JobStatus.WAITING, JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING):
        with pytest.raises(IntegrityError), transaction.atomic():
            Job.objects.create(topic_id="echo", entity_id="e", status=status)
    # Jobs without an entity are never constrained.
    Job.objects.create(topic_id="echo", entity_id=None)
    Job.objects.create(topic_id="echo", entity_id=None)
    assert Job.objects.filter(entity_id="e").count() == 6


# -- queue position and priority ------------------------------------------------------


def test_position_in_queue():
    a = Job.objects.enqueue("echo")
    b = Job.objects.enqueue("echo")
    c = Job.objects.enqueue("echo", priority=10)
    assert [j.position_in_queue for j in (a, b, c)] == [1, 2, 0]
    scheduled = Job.objects.enqueue("echo", delay=60)
    assert scheduled.position_in_queue is None
    set_status(a, JobStatus.QUEUED, JobStatus.RUNNING)
    assert a.position_in_queue is None


def test_set_priority_moves_the_job_in_redis():
    a = Job.objects.enqueue("echo")
    b = Job.objects.enqueue("echo", priority=1)
    assert engine.queue_ids("echo") == ids([b, a])
    a.set_priority(2)
    assert Job.objects.get(pk=a.pk).priority == 2
    assert engine.queue_ids("echo") == ids([a, b])
    with pytest.raises(InvalidJob):
        a.set_priority(1000)
    set_status(b, JobStatus.QUEUED, JobStatus.RUNNING)
    with pytest.raises(InvalidTransition, match="running"):
        b.set_priority(5)


def test_set_priority_by_entity():
    a = Job.objects.enqueue("echo", entity_id="doc-1")
    b = Job.objects.enqueue("echo", priority=3)
    job = Job.objects.set_priority("echo", "doc-1", 9)
    assert job.pk == a.pk and Job.objects.get(pk=a.pk).priority == 9
    assert engine.queue_ids("echo") == ids([a, b])
    with pytest.raises(InvalidTransition, match="doc-2"):
        Job.objects.set_priority("echo", "doc-2", 9)


def test_queue_status_counts_by_status_and_priority():
    Job.objects.enqueue_many([("echo", {}), ("echo", {}), {"topic": "echo", "priority": 7}])
    Job.objects.enqueue("echo", delay=600)
    running = Job.objects.enqueue("echo", priority=-3)
    set_status(running, JobStatus.QUEUED, JobStatus.RUNNING)
    Job.objects.enqueue("other")
    status = Job.objects.queue_status("echo")
    assert status["topic"] == "echo"
    assert status["by_status"] == {
        "waiting": 0, "scheduled": 1, "queued": 3, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0,
    }
    assert list(status["by_priority"].items()) == [(7, 1), (0, 2)]
    # The running job's id is still in the Redis queue: no worker popped it.
    assert status["redis"] == {"queued": 4, "leased": 0, "scheduled": 1}


# -- transitions ----------------------------------------------------------------------


def test_cancel_a_queued_job_removes_it_from_redis(redis_client):
    a = Job.objects.enqueue("echo", entity_id="e")
    b = Job.objects.enqueue("echo")
    assert a.cancel("no longer needed") is True
    a.refresh_from_db()
    assert (a.status, a.error, a.finished_at is not None) == ("cancelled", "no longer needed", True)
    assert engine.queue_ids("echo") == ids([b])
    assert redis_client.hget(engine.TopicKeys("echo").entities, "e") is None
    # The entity is free again.
    assert Job.objects.enqueue("echo", entity_id="e").pk != a.pk


def test_cancel_a_scheduled_job_removes_it_from_the_schedule():
    job = Job.objects.enqueue("echo", delay=600)
    assert engine.depths("echo")["scheduled"] == 1
    job.cancel()
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_cancel_a_running_job_asks_it_to_abort():
    job = Job.objects.enqueue("echo")
    set_status(job, JobStatus.QUEUED, JobStatus.RUNNING)
    assert job.cancel() is True
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING  # the worker finishes the cancel
    assert engine.abort_requested("echo", str(job.pk))
    assert job.should_abort()


def test_cancel_a_finished_job_is_refused():
    job = Job.objects.enqueue("echo")
    set_status(job, JobStatus.QUEUED, JobStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition, match="succeeded"):
        job.cancel()
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED


def test_a_cancel_inside_a_rolled_back_transaction_leaves_redis_alone():
    job = Job.objects.enqueue("echo")
    with pytest.raises(RuntimeError), transaction.atomic():
        job.cancel()
        raise RuntimeError
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert engine.queue_ids("echo") == ids([job])


def test_requeue_a_failed_job():
    job = Job.objects.enqueue("echo")
    engine.pop("echo")
    assert force(job, (JobStatus.QUEUED,), status=JobStatus.FAILED, attempts=2, error="boom")
    job.requeue()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error, job.finished_at) == ("queued", 0, "", None)
    assert engine.queue_ids("echo") == ids([job])
    assert engine.depths("echo")["leased"] == 0


def test_requeue_a_cancelled_job_keeping_its_attempts():
    job = Job.objects.enqueue("echo")
    assert force(job, (JobStatus.QUEUED,), attempts=1)
    job.cancel()
    job.requeue(reset_attempts=False)
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 1)
    assert engine.queue_ids("echo") == ids([job])


def test_requeue_when_the_entity_has_a_new_active_job_is_refused_cleanly():
    old = Job.objects.enqueue("echo", entity_id="e")
    engine.ack("echo", engine.pop("echo")[0], "e")  # run and failed
    assert force(old, (JobStatus.QUEUED,), status=JobStatus.FAILED)
    new = Job.objects.enqueue("echo", entity_id="e")
    with transaction.atomic():
        with pytest.raises(DuplicateJob) as info:
            old.requeue()
        assert info.value.existing_id == new.pk
        # The caller's transaction is still usable.
        assert Job.objects.get(pk=old.pk).status == JobStatus.FAILED
    assert engine.queue_ids("echo") == ids([new])


@pytest.mark.django_db
@pytest.mark.parametrize("status", [JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUCCEEDED])
def test_requeue_of_a_job_that_did_not_fail_is_refused(status):
    job = Job.objects.enqueue("echo")
    if status != JobStatus.QUEUED:
        set_status(job, JobStatus.QUEUED, status)
    with pytest.raises(InvalidTransition, match=str(status)):
        job.requeue()
    assert Job.objects.get(pk=job.pk).status == status


def test_run_now():
    queued = Job.objects.enqueue("echo")
    job = Job.objects.enqueue("echo", delay=3600, priority=5)
    job.run_now()
    job.refresh_from_db()
    assert (job.status, job.run_after, job.queued_at is not None) == ("queued", None, True)
    assert engine.queue_ids("echo") == ids([job, queued])
    assert engine.depths("echo")["scheduled"] == 0
    with pytest.raises(InvalidTransition, match="queued"):
        job.run_now()


@pytest.mark.django_db
def test_two_cancels_race_and_only_one_wins():
    job = Job.objects.enqueue("echo")
    stale = Job.objects.get(pk=job.pk)
    set_status(job, JobStatus.QUEUED, JobStatus.RUNNING)
    # The stale copy still says "queued"; the guarded UPDATE sees the real status.
    assert not move(stale, "cancel", error="too late")
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING


@pytest.mark.django_db
def test_querysets():
    Job.objects.enqueue_many([("echo", {}), ("echo", {})])
    scheduled = Job.objects.enqueue("echo", delay=60)
    done = Job.objects.enqueue("echo")
    set_status(done, JobStatus.QUEUED, JobStatus.SUCCEEDED)
    assert Job.objects.queued().count() == 2
    assert Job.objects.pending().count() == 3
    assert Job.objects.active().count() == 3
    assert list(Job.objects.finished()) == [done]
    assert scheduled in Job.objects.pending()
