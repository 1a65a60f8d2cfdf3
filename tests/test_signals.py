"""Signals sent as jobs move through their life, each with ``sender=Job``."""

from __future__ import annotations

import pytest

from jobqueue import signals
from jobqueue.models import Job
from jobqueue.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)

NAMES = ("job_enqueued", "job_started", "job_succeeded", "job_failed", "job_finished")


@pytest.fixture
def received():
    """Every signal sent during the test, as (name, sender, job id, extra kwargs)."""
    log: list[tuple[str, object, object, dict]] = []
    receivers = {}
    for name in NAMES:
        def receiver(sender, job, signal, _name=name, **kwargs):
            log.append((_name, sender, job.pk, kwargs))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver, dispatch_uid=f"tests.signals.{name}")
    yield log
    for name in NAMES:
        getattr(signals, name).disconnect(dispatch_uid=f"tests.signals.{name}")


def run_worker(*topics: str) -> None:
    assert Worker(topics=list(topics), install_signals=False, burst=True).run() == 0


def for_job(log, job):
    return [(name, kwargs) for name, _sender, pk, kwargs in log if pk == job.pk]


def test_every_signal_has_job_as_sender(received):
    Job.objects.enqueue("echo", {"a": 1})
    Job.objects.enqueue("flaky", {"succeed_on": 99}, max_attempts=1)
    run_worker("echo", "flaky")
    assert {name for name, *_ in received} == set(NAMES)
    assert all(sender is Job for _name, sender, _pk, _kw in received)


def test_success_sends_started_succeeded_finished(received):
    job = Job.objects.enqueue("echo", {"a": 1})
    run_worker("echo")
    sent = for_job(received, job)
    assert [name for name, _ in sent] == ["job_enqueued", "job_started", "job_succeeded", "job_finished"]
    assert dict(sent)["job_succeeded"] == {"result": {"a": 1}}


def test_failures_say_whether_they_retry(received):
    job = Job.objects.enqueue("flaky", {"succeed_on": 99}, max_attempts=2)
    run_worker("flaky")
    sent = for_job(received, job)
    assert [name for name, _ in sent] == [
        "job_enqueued", "job_started", "job_failed", "job_started", "job_failed", "job_finished"]
    failures = [kwargs for name, kwargs in sent if name == "job_failed"]
    assert [f["will_retry"] for f in failures] == [True, False]
    assert "attempt 2 failed" in failures[1]["error"]


def test_enqueue_many_and_cancel_send_signals(received):
    jobs = Job.objects.enqueue_many([("echo", {"i": 1}), ("other", {})])
    assert [pk for name, _s, pk, _k in received if name == "job_enqueued"] == [j.pk for j in jobs]
    jobs[0].cancel()
    assert [name for name, _ in for_job(received, jobs[0])] == ["job_enqueued", "job_finished"]


def test_a_receiver_sees_the_finished_state(received):
    seen = []

    def on_finished(sender, job, **kwargs):
        seen.append((job.status, Job.objects.get(pk=job.pk).status))

    signals.job_finished.connect(on_finished, dispatch_uid="tests.signals.state")
    try:
        Job.objects.enqueue("echo")
        run_worker("echo")
    finally:
        signals.job_finished.disconnect(dispatch_uid="tests.signals.state")
    assert seen == [("succeeded", "succeeded")]


def test_lost_job_without_attempts_left_sends_failed_and_finished(received):
    import os
    import time

    from jobqueue import engine
    from jobqueue.worker import maintenance
    from jobqueue.worker.lifecycle import claim

    job = Job.objects.enqueue("echo", max_attempts=1)
    assert engine.pop("echo", 1, lease_seconds=0.1) == [str(job.pk)]
    assert claim(str(job.pk), "w-dead", os.getpid()) is not None
    time.sleep(0.2)
    assert maintenance.reap(["echo"]) == 1
    sent = for_job(received, job)
    assert [name for name, _ in sent] == ["job_enqueued", "job_started", "job_failed", "job_finished"]
    assert dict(sent)["job_failed"]["will_retry"] is False
