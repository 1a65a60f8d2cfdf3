"""``enqueue(job_id=...)``: the caller fixes a job's id, and a second enqueue with that id
returns the job already there without writing (what makes a redelivered message harmless)."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from jobqueue import engine
from jobqueue.exceptions import DuplicateJob, InvalidJob
from jobqueue.models import Job
from jobqueue.transitions import create

pytestmark = pytest.mark.django_db(transaction=True)


def queued_ids(topic: str) -> list[str]:
    return [i.decode() for i in engine.get_redis().zrange(engine.TopicKeys(topic).queue, 0, -1)]


def test_a_fixed_id_is_the_jobs_primary_key():
    job_id = uuid.uuid4()
    job = Job.objects.enqueue("echo", {"a": 1}, job_id=job_id)
    assert job.pk == job_id
    assert Job.objects.get(pk=job_id).payload == {"a": 1}
    assert queued_ids("echo") == [str(job_id)]


def test_the_id_may_be_given_as_text():
    job_id = uuid.uuid4()
    assert Job.objects.enqueue("echo", job_id=str(job_id)).pk == job_id


def test_a_second_enqueue_with_the_same_id_returns_the_first_job_and_writes_nothing():
    job_id = uuid.uuid4()
    first = Job.objects.enqueue("echo", {"n": 1}, job_id=job_id, priority=1)
    with CaptureQueriesContext(connection) as queries:
        again = Job.objects.enqueue("echo", {"n": 2}, job_id=job_id, priority=50)
    assert again.pk == first.pk
    assert again.payload == {"n": 1} and again.priority == 1  # the first job, untouched
    writes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE ", "DELETE"))]
    assert [w for w in writes if "WHERE 0" not in w] == []  # SQLite's lock taking updates no row
    assert Job.objects.filter(topic_id="echo").count() == 1
    assert queued_ids("echo") == [str(job_id)]
    assert Job.objects.get(pk=job_id).priority == 1


def test_the_same_id_for_another_topic_is_refused():
    job_id = uuid.uuid4()
    Job.objects.enqueue("echo", job_id=job_id)
    with pytest.raises(DuplicateJob, match="topic 'echo'") as caught:
        Job.objects.enqueue("other", job_id=job_id)
    assert caught.value.existing_id == job_id
    assert Job.objects.count() == 1


def test_an_id_that_is_not_a_uuid_is_refused_before_writing():
    with pytest.raises(InvalidJob, match="job_id"):
        Job.objects.enqueue("echo", job_id="not-a-uuid")
    assert Job.objects.count() == 0


def test_a_rolled_back_job_frees_its_id():
    job_id = uuid.uuid4()
    with pytest.raises(RuntimeError), transaction.atomic():
        Job.objects.enqueue("echo", job_id=job_id)
        raise RuntimeError("roll back")
    assert not Job.objects.filter(pk=job_id).exists()
    assert queued_ids("echo") == []
    assert Job.objects.enqueue("echo", {"again": True}, job_id=job_id).payload == {"again": True}


def test_enqueue_many_dedupes_fixed_ids_too():
    a, b = uuid.uuid4(), uuid.uuid4()
    Job.objects.enqueue("echo", {"n": 0}, job_id=a)
    jobs = Job.objects.enqueue_many([
        {"topic": "echo", "payload": {"n": 1}, "job_id": a},
        {"topic": "echo", "payload": {"n": 2}, "job_id": b},
        ("echo", {"n": 3}),
    ])
    assert [j.payload for j in jobs] == [{"n": 0}, {"n": 2}, {"n": 3}]
    assert jobs[0].pk == a and jobs[1].pk == b
    assert Job.objects.count() == 3


def test_insert_new_writes_only_the_ids_no_row_holds():
    there = Job.objects.enqueue("echo", {"n": 0}, job_id=uuid.uuid4())
    same, fresh = uuid.uuid4(), uuid.uuid4()
    jobs = [Job.objects.build("echo", {"n": n}, job_id=pk)[0]
            for n, pk in ((1, there.pk), (2, fresh), (3, same), (4, same))]
    with transaction.atomic():
        outcomes = create.insert_new(jobs, "default")
        create.created([j for j, o in zip(jobs, outcomes, strict=True) if o is None], "default")
    assert outcomes[0].pk == there.pk and outcomes[0].payload == {"n": 0}
    assert outcomes[1] is None and outcomes[2] is None
    assert outcomes[3] is jobs[2]  # the same id twice in one batch: the first one is written
    assert dict(Job.objects.values_list("pk", "payload")) == {there.pk: {"n": 0}, fresh: {"n": 2}, same: {"n": 3}}
    assert sorted(queued_ids("echo")) == sorted(str(pk) for pk in (there.pk, fresh, same))


def test_insert_new_reports_a_row_of_another_topic_without_writing():
    other = Job.objects.enqueue("other", job_id=uuid.uuid4())
    job, _ = Job.objects.build("echo", {}, job_id=other.pk)
    with transaction.atomic():
        outcomes = create.insert_new([job], "default")
    assert outcomes[0].topic_id == "other"
    assert Job.objects.filter(topic_id="echo").count() == 0


def test_concurrent_enqueues_of_one_id_make_one_row():
    job_id = uuid.uuid4()
    start = threading.Barrier(4)
    results, errors = [], []

    def enqueue(n: int) -> None:
        try:
            start.wait()
            results.append(Job.objects.enqueue("echo", {"n": n}, job_id=job_id).pk)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=enqueue, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results == [job_id] * 4
    assert Job.objects.filter(pk=job_id).count() == 1
    assert queued_ids("echo") == [str(job_id)]
