"""The worker's small parts on their own: topic slots, outages, stop signals."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import redis

from jobqueue.models import Topic
from jobqueue.worker import Worker, outage, slots
from jobqueue.worker.runner import WorkerInterrupted
from jobqueue.worker.stopping import install_stop_signals

pytestmark = pytest.mark.django_db(transaction=True)


# -- slots ----------------------------------------------------------------------------------


def test_slots_are_taken_within_each_topics_concurrency_and_released():
    Topic.objects.filter(name="other").update(concurrency=2)
    rows = slots.topic_rows(["echo", "other"])
    assert rows["other"].concurrency == 2
    first: dict = {}
    second: dict = {}
    third: dict = {}
    for worker_id, held in (("w1", first), ("w2", second), ("w3", third)):
        slots.take_slots(worker_id, ["echo", "other"], held, rows)
    assert sorted(first) == ["echo", "other"]
    assert sorted(second) == ["other"] and third == {}  # echo allows one worker, other two
    assert slots.owned_topics(["other", "echo"], first) == ["other", "echo"]

    slots.release_slots(first)
    assert first == {}
    slots.take_slots("w3", ["echo", "other"], third, rows)
    assert sorted(third) == ["echo", "other"]


def test_a_worker_running_jobs_counts_once_against_a_topics_concurrency():
    """After Redis lost the semaphore, live workers running a topic's jobs keep it full;
    one that claimed several ahead (its batch) still holds one slot, not one per job."""
    from django.utils import timezone

    from jobqueue import engine
    from jobqueue.models import Job, JobStatus

    Topic.objects.filter(name="other").update(concurrency=2)
    rows = slots.topic_rows(["echo", "other"])
    engine.beat("w1", {"topics": ["echo", "other"]})
    for topic, count in (("other", 3), ("echo", 1)):
        for _ in range(count):
            job = Job.objects.enqueue(topic, {})
            Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, worker_id="w1", started_at=timezone.now())
    assert slots.running_elsewhere("w2", ["echo", "other"]) == {"echo": 1, "other": 1}
    held: dict = {}
    slots.take_slots("w2", ["echo", "other"], held, rows)  # the semaphores hold no slot of w1's
    assert sorted(held) == ["other"]  # echo allows one worker, and w1 runs its job
    engine.beat("w3", {"topics": ["other"]})
    Job.objects.filter(topic_id="other").update(worker_id="w3")
    third: dict = {}
    slots.release_slots(held)
    slots.take_slots("w4", ["other"], third, rows)
    assert sorted(third) == ["other"]  # w3's three jobs count as one worker of two allowed


def test_topics_to_serve_are_checked():
    assert slots.resolve_topics(["echo", "other", "echo"]) == ["echo", "other"]
    with pytest.raises(ValueError, match="Unknown topic\\(s\\): nope"):
        slots.resolve_topics(["echo", "nope"])
    assert {"echo", "other"} <= set(slots.resolve_topics(None))


# -- outages --------------------------------------------------------------------------------


def test_an_outage_is_logged_once_and_its_end_reported(monkeypatch, caplog):
    waits: list[float] = []
    monkeypatch.setattr(outage.time, "sleep", waits.append)
    lost = outage.Outage()
    with caplog.at_level(logging.WARNING, logger="jobqueue.worker"):
        lost.back_off("Redis", redis.ConnectionError("refused"))
        lost.back_off("Redis", redis.ConnectionError("refused"))
        assert lost.ongoing
        lost.end()
    assert caplog.text.count("Lost contact with Redis: refused") == 1
    assert "Connection restored after" in caplog.text
    assert not lost.ongoing
    assert len(waits) == 2 and all(0.1 < w <= 6.0 for w in waits)


def test_start_up_steps_are_retried_until_they_succeed_or_the_worker_stops(monkeypatch):
    monkeypatch.setattr(outage.time, "sleep", lambda seconds: None)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("not yet")
        return "done"

    assert outage.call_with_retry(flaky, give_up=lambda: False) == "done"
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(redis.ConnectionError):
        outage.call_with_retry(flaky, give_up=lambda: True)
    assert len(calls) == 1


# -- stop signals ---------------------------------------------------------------------------


def test_the_first_stop_signal_stops_the_worker_and_the_second_interrupts_it():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    worker = Worker(topics=["echo"], install_signals=False)
    try:
        assert install_stop_signals(worker)
        os.kill(os.getpid(), signal.SIGTERM)
        assert worker.stopping and not worker.interrupting
        worker.watchdog.enter(object(), None)  # as if an inline handler were running
        with pytest.raises(WorkerInterrupted):
            os.kill(os.getpid(), signal.SIGINT)
        assert worker.interrupting and worker.watchdog.stop_requested
    finally:
        worker.watchdog.leave()
        for signum, handler in before.items():
            signal.signal(signum, handler)
