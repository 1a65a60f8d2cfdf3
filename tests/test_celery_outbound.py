"""Handing steps to a Celery fleet: ``CeleryNext`` and ``forward_to_celery``, run by a real
``celery worker -P solo`` on RabbitMQ and on Redis, with the message checked against
Celery's own."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from jobqueue import Next, registry
from jobqueue.contrib.celery import SEND_TOPIC, CeleryNext, NotSupported, PublishError, forward_to_celery
from jobqueue.contrib.celery.publish import task_message
from jobqueue.models import Job

from .celery_worker_util import BROKERS, RABBITMQ_URL, CeleryFleet, delete_queue, unique_queue
from .workerutil import jobqueue_settings, run_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(params=sorted(BROKERS))
def fleet(request, tmp_path):
    fleet = CeleryFleet(BROKERS[request.param], tmp_path)
    try:
        fleet.wait_ready()
        with jobqueue_settings(CELERY_BROKER_URL=fleet.broker):
            yield fleet
    finally:
        fleet.close()


def send_job_of(job: Job) -> Job:
    return Job.objects.get(parent=job, topic_id=SEND_TOPIC)


def test_a_handler_hands_a_step_to_a_real_celery_worker(fleet):
    key = unique_queue()
    job = Job.objects.enqueue(
        "celery.handover",
        {"args": [key, 42], "kwargs": {"colour": "blue"}, "queue": fleet.queue, "priority": 3},
    )
    run_worker("celery.handover", SEND_TOPIC)

    job.refresh_from_db()
    assert job.status == "succeeded"
    send = send_job_of(job)
    assert send.status == "succeeded", send.error
    # The Celery task id is the sending job's id, recorded in its result.
    assert send.result["celery_task_id"] == str(send.pk)
    assert send.result["task"] == "fleet.record" and send.result["queue"] == fleet.queue
    assert "guest:guest" not in send.result["broker"]

    seen = fleet.seen(key)
    assert (seen["value"], seen["kwargs"]) == (42, {"colour": "blue"})
    assert seen["id"] == str(send.pk)
    assert seen["parent_id"] == str(job.pk) and seen["root_id"] == str(send.pk)
    assert seen["eta"] is None and seen["retries"] == 0
    assert seen["origin"].startswith(f"gen{os.getpid()}@")  # published by this (inline) worker
    # Celery's result backend has it under the same id, as AsyncResult reads it.
    assert fleet.result(str(send.pk)) == seen


def test_a_forked_handler_hands_over_and_a_forked_child_publishes(tmp_path):
    """With process isolation the ``CeleryNext`` crosses from the child to the worker as
    data, and the sending job publishes from a child of its own."""
    fleet = CeleryFleet(RABBITMQ_URL, tmp_path)
    try:
        fleet.wait_ready()
        key = unique_queue()
        job = Job.objects.enqueue("celery.handover", {"args": [key, "forked"], "queue": fleet.queue})
        with jobqueue_settings(CELERY_BROKER_URL=RABBITMQ_URL):
            run_worker("celery.handover", SEND_TOPIC, isolation="process")
        send = send_job_of(job)
        assert send.status == "succeeded", send.error
        seen = fleet.seen(key)
        assert (seen["id"], seen["parent_id"], seen["value"]) == (str(send.pk), str(job.pk), "forked")
        assert seen["origin"].startswith("gen") and not seen["origin"].startswith(f"gen{os.getpid()}@")
    finally:
        fleet.close()


def test_countdown_becomes_the_messages_eta(fleet):
    key = unique_queue()
    before = timezone.now()
    job = Job.objects.enqueue("celery.handover", {"args": [key, "later"], "queue": fleet.queue, "countdown": 1.5})
    run_worker("celery.handover", SEND_TOPIC)
    send = send_job_of(job)
    assert send.payload["eta"] is not None
    seen = fleet.seen(key)
    eta = dt.datetime.fromisoformat(seen["eta"])
    # Counted from when the handler returned: after the job was enqueued, plus the countdown.
    assert eta >= before + dt.timedelta(seconds=1.5)
    assert eta == dt.datetime.fromisoformat(send.payload["eta"])


def test_a_fan_out_of_celery_steps_gets_one_task_id_each(fleet):
    key = unique_queue()
    job = Job.objects.enqueue("celery.handover.many", {"key": key, "queue": fleet.queue})
    run_worker("celery.handover.many", SEND_TOPIC)
    sends = list(Job.objects.filter(parent=job).order_by("payload__args"))
    assert len(sends) == 2
    ids = {fleet.seen(f"{key}-{i}")["id"] for i in range(2)}
    assert ids == {str(s.pk) for s in sends}


def test_a_forwarding_topic_publishes_each_of_its_jobs(fleet):
    key = unique_queue()
    forward_to_celery("celery.forwarded", task="fleet.record", queue=fleet.queue, max_attempts=2)
    try:
        direct = Job.objects.enqueue("celery.forwarded", {"args": [f"{key}-direct", 1], "kwargs": {"via": "x"}})
        parent = Job.objects.enqueue("chain_to", {"topic": "celery.forwarded", "args": [f"{key}-next", 2]})
        run_worker("celery.forwarded", "chain_to")
        direct.refresh_from_db()
        assert direct.result["celery_task_id"] == str(direct.pk)
        assert fleet.seen(f"{key}-direct")["kwargs"] == {"via": "x"}
        chained = Job.objects.get(parent=parent)
        assert chained.topic_id == "celery.forwarded"
        seen = fleet.seen(f"{key}-next")
        assert (seen["id"], seen["parent_id"], seen["value"]) == (str(chained.pk), str(parent.pk), 2)
    finally:
        registry.unregister("celery.forwarded")


def test_broker_down_fails_the_send_with_a_clear_error_then_the_retry_reuses_the_task_id(tmp_path):
    fleet = CeleryFleet(RABBITMQ_URL, tmp_path)
    try:
        fleet.wait_ready()
        key = unique_queue()
        job = Job.objects.enqueue("celery.handover", {"args": [key, "x"], "queue": fleet.queue})
        with jobqueue_settings(CELERY_BROKER_URL="amqp://guest:secret@127.0.0.1:1//"):
            run_worker("celery.handover", SEND_TOPIC, max_jobs=2)  # the hand-over, one send
        job.refresh_from_db()
        assert job.status == "succeeded"  # its work is done; only the hand-over waits
        send = send_job_of(job)
        assert send.status == "scheduled" and send.attempts == 1
        assert f"Could not hand Celery task 'fleet.record' (task id {send.pk}) to the broker at" in send.error
        assert "amqp://guest:**@127.0.0.1:1//" in send.error and "secret" not in send.error
        execution = send.executions.get()
        assert execution.error_class == "jobqueue.contrib.celery.exceptions.PublishError"

        send.run_now()
        with jobqueue_settings(CELERY_BROKER_URL=RABBITMQ_URL):
            run_worker(SEND_TOPIC, max_jobs=1)
        send.refresh_from_db()
        assert send.status == "succeeded" and send.attempts == 2
        assert fleet.seen(key)["id"] == str(send.pk) == send.result["celery_task_id"]
    finally:
        fleet.close()


def test_without_a_broker_setting_the_send_fails_saying_what_to_set(settings):
    settings.CELERY_BROKER_URL = None
    job = Job.objects.enqueue(SEND_TOPIC, {"task": "fleet.record", "args": ["k", 1], "kwargs": {}}, max_attempts=1)
    run_worker(SEND_TOPIC)
    job.refresh_from_db()
    assert job.status == "failed"
    assert "JOBQUEUE['CELERY_BROKER_URL']" in job.error


def test_django_celery_broker_url_is_the_fallback(settings, tmp_path):
    fleet = CeleryFleet(RABBITMQ_URL, tmp_path)
    try:
        fleet.wait_ready()
        settings.CELERY_BROKER_URL = RABBITMQ_URL
        key = unique_queue()
        job = Job.objects.enqueue("celery.handover", {"args": [key, 7], "queue": fleet.queue})
        run_worker("celery.handover", SEND_TOPIC)
        assert fleet.seen(key)["id"] == str(send_job_of(job).pk)
    finally:
        fleet.close()


@pytest.mark.parametrize("transport", sorted(BROKERS))
def test_the_message_is_the_one_celery_sends(transport):
    """Publish to a real broker, take the raw message back with kombu, and compare it
    with the message Celery's own ``as_task_v2`` builds for the same call."""
    from celery import Celery

    broker = BROKERS[transport]
    queue = unique_queue()
    job = Job.objects.enqueue(
        SEND_TOPIC,
        {"task": "fleet.record", "args": ["k", [1, 2]], "kwargs": {"a": {"b": None}}, "queue": queue, "priority": 5},
    )
    try:
        with jobqueue_settings(CELERY_BROKER_URL=broker):
            run_worker(SEND_TOPIC)
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        with Connection(broker) as conn:
            bound = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)(conn.channel())
            message = bound.get(no_ack=True)
        assert message is not None
        assert message.content_type == "application/json" and message.content_encoding == "utf-8"
        assert message.properties["correlation_id"] == str(job.pk)
        assert message.properties["reply_to"] == ""
        assert message.properties.get("priority") == 5
        assert message.decode() == [
            ["k", [1, 2]],
            {"a": {"b": None}},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ]

        celery = Celery("reference", broker=broker).amqp.as_task_v2(
            str(job.pk),
            "fleet.record",
            args=("k", [1, 2]),
            kwargs={"a": {"b": None}},  # as delay() passes them
        )
        headers = message.headers
        assert set(headers) == set(celery.headers)
        same = {k: v for k, v in celery.headers.items() if k != "origin"}
        assert {k: headers[k] for k in same} == same
        assert headers["origin"].startswith("gen")
        assert [list(celery.body[0]), celery.body[1], celery.body[2]] == message.decode()
    finally:
        delete_queue(broker, queue)


def test_celery_next_checks_its_arguments():
    with pytest.raises(ValueError, match="Celery task name"):
        CeleryNext("")
    with pytest.raises(ValueError, match="countdown or eta"):
        CeleryNext("t", countdown=1, eta=timezone.now())
    with pytest.raises(ValueError, match="naive"):
        CeleryNext("t", eta=dt.datetime(2030, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="priority"):
        CeleryNext("t", priority=-1)
    step = CeleryNext("app.tasks.resize", args=(1,), kwargs={"w": 2}, queue="images", expires=60)
    assert isinstance(step, Next) and step.topic == SEND_TOPIC
    assert step.data["args"] == [1] and step.data["queue"] == "images" and step.data["expires"]


def test_unsupported_and_publish_errors_are_jobqueue_errors():
    from jobqueue.exceptions import JobQueueError

    assert issubclass(NotSupported, JobQueueError) and issubclass(NotSupported, NotImplementedError)
    assert issubclass(PublishError, JobQueueError)
    headers, properties, body = task_message("id-1", "t", [1], {})
    assert headers["root_id"] == "id-1" and properties == {"correlation_id": "id-1", "reply_to": ""}
