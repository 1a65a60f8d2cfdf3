"""The Celery bridge against the real thing: a Celery app's ``delay()`` and ``send_task()``
through a real RabbitMQ and a real Redis broker, turned into jobs that workers run.

Each test has a queue of its own on the broker, deleted afterwards. The bridge runs in
this process in burst mode (until its queue is empty), or as the ``jobbridge`` command.
"""

from __future__ import annotations

import datetime as dt
import decimal
import pickle
import uuid

import pytest
from django.utils import timezone

from jobqueue.contrib.celery.bridge import stored_counts
from jobqueue.models import Job
from tests.bridgeutil import TASKS, Broker, run_bridge
from tests.workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def job_of(result) -> Job:
    return Job.objects.get(pk=uuid.UUID(result.id))


def assert_queue_empty(broker: Broker) -> None:
    """Nothing left to deliver (refused messages are not requeued), nothing held unacknowledged."""
    assert broker.waiting() == 0
    if broker.kind == "redis":
        assert broker.unacked() == 0


# -- messages become jobs ---------------------------------------------------------------


def test_delay_and_send_task_become_jobs_that_a_worker_runs(broker):
    first = broker.add.delay(2, 3)
    second = broker.app.send_task("tests.celery.add", args=[4], kwargs={"b": 5})
    other = broker.app.send_task("tests.celery.other", kwargs={"x": [1, {"y": None}]})

    tally = run_bridge(broker)

    assert (tally.created, tally.duplicate, dict(tally.refused)) == (3, 0, {})
    assert job_of(first).payload == {"args": [2, 3], "kwargs": {}}
    assert job_of(second).payload == {"args": [4], "kwargs": {"b": 5}}
    assert job_of(other).topic_id == "other"
    assert job_of(other).payload == {"args": [], "kwargs": {"x": [1, {"y": None}]}}
    assert_queue_empty(broker)
    assert stored_counts() == {"created": 3}

    run_worker("echo", "other")
    assert job_of(first).status == "succeeded"
    assert job_of(first).result == {"args": [2, 3], "kwargs": {}}  # echo returns its payload
    assert job_of(second).result == {"args": [4], "kwargs": {"b": 5}}
    assert job_of(other).result == {"ok": True}


def test_typed_values_arrive_as_json_strings(broker):
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.timezone.utc)
    some_id = uuid.uuid4()
    sent = broker.add.delay(when, when.date(), decimal.Decimal("1.10"), some_id, b"raw", t=when.time())

    run_bridge(broker)

    assert job_of(sent).payload == {
        "args": ["2026-01-02T03:04:05.600000+00:00", "2026-01-02", "1.10", str(some_id), "raw"],
        "kwargs": {"t": "03:04:05.600000"},
    }


def test_countdown_and_eta_become_run_after(broker):
    before = timezone.now()
    later = broker.add.apply_async((1,), countdown=120)
    at = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    fixed = broker.add.apply_async((2,), eta=at)
    now = broker.add.apply_async((3,))

    run_bridge(broker)

    job = job_of(later)
    assert job.status == "scheduled"
    assert before + dt.timedelta(seconds=119) < job.run_after < timezone.now() + dt.timedelta(seconds=121)
    assert job_of(fixed).run_after == at and job_of(fixed).status == "scheduled"
    assert job_of(now).run_after is None and job_of(now).status == "queued"


def test_expired_messages_are_dropped_and_counted(broker):
    gone = broker.add.apply_async((1,), expires=timezone.now() - dt.timedelta(seconds=5))
    too_late = broker.add.apply_async((2,), countdown=60, expires=30)  # would expire before it may run
    fresh = broker.add.apply_async((3,), expires=600)

    tally = run_bridge(broker)

    # Celery also gives an AMQP message its expiry as a TTL: RabbitMQ drops the expired one itself.
    expired = 1 if broker.kind == "amqp" else 2
    assert dict(tally.refused) == {"expired": expired}
    assert not Job.objects.filter(pk__in=[uuid.UUID(gone.id), uuid.UUID(too_late.id)]).exists()
    assert job_of(fresh).payload == {"args": [3], "kwargs": {}}
    assert_queue_empty(broker)
    assert stored_counts() == {"created": 1, "refused:expired": expired}


def test_priority_is_mapped_per_transport(broker):
    low = broker.add.apply_async((1,), priority=1)
    high = broker.add.apply_async((2,), priority=9)
    plain = broker.add.apply_async((3,))

    run_bridge(broker)

    if broker.kind == "amqp":  # RabbitMQ: higher first, as in jobqueue
        assert (job_of(low).priority, job_of(high).priority) == (1, 9)
    else:  # Celery's Redis transport: 0 first, 9 last
        assert (job_of(low).priority, job_of(high).priority) == (-1, -9)
    assert job_of(plain).priority == 0
    order = [str(j.pk) for j in Job.objects.in_queue_order()]
    first_in_celery = high if broker.kind == "amqp" else low
    assert order.index(first_in_celery.id) < order.index(plain.id) if broker.kind == "amqp" else True
    assert order[0] == (high.id if broker.kind == "amqp" else plain.id)


# -- refused messages -------------------------------------------------------------------


class Trap:
    """Unpickling this creates a file: proof that a pickle body was (or was not) loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_refused_messages_are_counted_never_run_and_not_requeued(broker, tmp_path):
    marker = tmp_path / "unpickled"
    ok_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": "tests.celery.add", "id": ok_id}
    broker.publish_raw(pickle.dumps([[Trap(str(marker))], {}, {}]), "application/x-python-serialize",
                       {**headers, "id": str(uuid.uuid4())})
    broker.publish([[1], {}, {}], serializer="yaml", headers={**headers, "id": str(uuid.uuid4())})
    broker.publish([[1], {}, {}], headers={"lang": "py", "id": str(uuid.uuid4())})  # no task
    broker.publish([[1], {}, {}], headers={"lang": "py", "task": "tests.celery.add"})  # no id
    broker.app.send_task("app.tasks.unknown", args=[1])
    broker.publish({"task": "tests.celery.add", "id": str(uuid.uuid4()), "args": [1], "kwargs": {}})  # protocol 1
    broker.publish(["not", "args"], headers={**headers, "id": str(uuid.uuid4())})
    broker.publish_raw(b"{not json", "application/json", {**headers, "id": str(uuid.uuid4())}, "utf-8")
    broker.add.apply_async((1,), link=broker.add.s(2))  # a callback: a canvas
    broker.publish([["\u0000"], {}, {}], headers={**headers, "id": str(uuid.uuid4())})  # jobqueue refuses NUL
    broker.publish([[1], {}, {}], headers=headers)  # the one good message

    tally = run_bridge(broker)

    assert dict(tally.refused) == {
        "content-type": 2, "no-task": 1, "no-id": 1, "unmapped": 1, "protocol-1": 1, "malformed": 2,
        "canvas": 1, "invalid": 1,
    }
    assert not marker.exists()  # the pickle body was never loaded
    assert list(Job.objects.values_list("pk", flat=True)) == [uuid.UUID(ok_id)]
    assert_queue_empty(broker)
    counts = stored_counts()
    assert counts.pop("created") == 1
    assert counts == {f"refused:{reason}": n for reason, n in tally.refused.items()}

    assert run_bridge(broker).refused == {}  # rejected for good: nothing comes back


def test_refusals_are_logged_with_their_reason(broker, caplog):
    broker.app.send_task("app.tasks.unknown", args=[1], task_id="abc-123")
    with caplog.at_level("WARNING", logger="jobqueue.celery"):
        run_bridge(broker)
    assert "Refused a Celery message (unmapped): task 'app.tasks.unknown' is mapped to no topic" in caplog.text
    assert "id abc-123" in caplog.text


# -- delivered twice, created once ------------------------------------------------------


def test_the_same_task_id_twice_makes_one_job(broker):
    task_id = str(uuid.uuid4())
    broker.add.apply_async((1,), task_id=task_id)
    broker.add.apply_async((2,), task_id=task_id)
    first = run_bridge(broker)
    broker.add.apply_async((3,), task_id=task_id)
    second = run_bridge(broker)

    assert (first.created, first.duplicate, second.created, second.duplicate) == (1, 1, 0, 1)
    assert list(Job.objects.values_list("payload", flat=True)) == [{"args": [1], "kwargs": {}}]
    assert_queue_empty(broker)


def test_a_task_id_that_is_not_a_uuid_names_one_job(broker):
    broker.app.send_task("tests.celery.add", args=[1], task_id="order-42")
    broker.app.send_task("tests.celery.add", args=[2], task_id="order-42")
    broker.app.send_task("tests.celery.add", args=[3], task_id="order-43")
    tally = run_bridge(broker)
    assert (tally.created, tally.duplicate) == (2, 1)
    assert sorted(p["args"][0] for p in Job.objects.values_list("payload", flat=True)) == [1, 3]


def test_a_task_id_of_another_topics_job_is_refused(broker):
    task_id = str(uuid.uuid4())
    Job.objects.enqueue("other", job_id=task_id)
    broker.add.apply_async((1,), task_id=task_id)
    tally = run_bridge(broker)
    assert dict(tally.refused) == {"id-conflict": 1}
    assert Job.objects.get().topic_id == "other"
    assert_queue_empty(broker)


def test_a_message_delivered_again_after_its_job_committed_finds_that_job(broker):
    """A consumer took the message and went away without acknowledging it: RabbitMQ delivers it
    again when the connection closes, Redis once its visibility timeout has passed."""
    import os
    import subprocess
    import sys
    import time

    sent = broker.add.apply_async((7,))
    assert run_bridge(broker).created == 1
    broker.add.apply_async((7,), task_id=sent.id)  # the broker has it again...
    taker = (  # ...and a consumer takes it without acknowledging, then dies
        "import os, sys\nfrom kombu import Connection, Exchange, Queue\n"
        "q = Queue(sys.argv[2], Exchange(sys.argv[2], type='direct'), routing_key=sys.argv[2])\n"
        "with Connection(sys.argv[1]) as c:\n"
        "    m = c.SimpleQueue(q).get(timeout=10)\n"
        "    print(m.headers['id'], flush=True)\n"
        "    os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", taker, broker.url, broker.queue], capture_output=True, text=True,
                          timeout=60, env={**os.environ})
    assert done.stdout.strip() == sent.id, done.stderr
    assert broker.waiting() == (1 if broker.kind == "amqp" else 0)  # Redis holds it as unacknowledged
    if broker.kind == "redis":
        assert broker.unacked() == 1
        time.sleep(1.5)  # past the visibility timeout below

    tally = run_bridge(broker, visibility_timeout=1)

    assert (tally.created, tally.duplicate) == (0, 1)
    assert Job.objects.count() == 1
    assert_queue_empty(broker)


# -- mapping --------------------------------------------------------------------------


def test_only_mapped_tasks_are_bridged(broker):
    broker.app.send_task("tests.celery.other", args=[1])
    tally = run_bridge(broker, tasks={"tests.celery.add": "echo"})
    assert dict(tally.refused) == {"unmapped": 1}
    assert Job.objects.count() == 0


def test_the_tests_map_real_topics():
    from jobqueue import registry

    assert all(registry.get(topic) is not None for topic in TASKS.values())


def test_a_killed_bridges_messages_go_back_unchanged_to_their_priority_list():
    """Redis: what ``take.lua`` took and nobody acknowledged, ``restore.lua`` puts back byte for byte."""
    import time

    from kombu import Connection

    from jobqueue.contrib.celery.redis_source import RedisSource

    broker = Broker("redis")
    try:
        broker.add.apply_async((1,), priority=7)
        with Connection(broker.url) as conn:
            lists = [conn.channel()._q_for_pri(broker.queue, pri) for pri in (0, 3, 6, 9)]
            client = conn.channel().client
            before = [client.lrange(key, 0, -1) for key in lists]
        assert [len(items) for items in before] == [0, 0, 1, 0]  # kombu's list of priorities 6 to 8
        with Connection(broker.url, transport_options={"visibility_timeout": 1}) as conn:
            source = RedisSource(conn, [broker.kombu_queue()])
            assert len(source.take(10)) == 1
            assert broker.unacked() == 1 and broker.waiting() == 0
            assert source.restore_visible(force=True) == 0  # not yet past the visibility timeout
            time.sleep(1.2)
            assert source.restore_visible(force=True) == 1
        with Connection(broker.url) as conn:
            client = conn.channel().client
            assert [client.lrange(key, 0, -1) for key in lists] == before
        assert broker.unacked() == 0
    finally:
        broker.delete()


def test_a_batch_is_written_again_while_the_database_refuses_it_and_acknowledged_after(broker, monkeypatch, caplog):
    from django.db import OperationalError

    from jobqueue.transitions import create

    real, calls = create.insert_new, []

    def flaky(jobs, using):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise OperationalError("the database went away")
        return real(jobs, using)

    monkeypatch.setattr(create, "insert_new", flaky)
    sent = [broker.add.delay(i) for i in range(3)]
    with caplog.at_level("WARNING", logger="jobqueue.celery"):
        tally = run_bridge(broker)
    assert calls == [3, 3] and tally.created == 3
    assert "Could not write jobs from Celery messages (the database went away); retrying" in caplog.text
    assert sorted(str(pk) for pk in Job.objects.values_list("pk", flat=True)) == sorted(r.id for r in sent)
    assert_queue_empty(broker)
