"""The worker run in this process (``burst=True``): handlers, results, retries,
timeouts, isolation and the Execution rows each attempt leaves."""

from __future__ import annotations

import os
import sys

import pytest
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobqueue import engine, registry
from jobqueue.models import Execution, Job, Topic
from jobqueue.worker import Worker, maintenance
from jobqueue.worker.lifecycle import HOSTNAME, backoff_delay

from .workerutil import jobqueue_settings, run_worker

pytestmark = pytest.mark.django_db(transaction=True)


# -- handlers and topics --------------------------------------------------------------


def test_handlers_in_jobs_modules_are_autodiscovered():
    spec = registry.get("echo")
    assert spec is not None
    assert spec.func.__module__ == "tests.testapp.jobs"
    assert "tests.testapp.jobs" in sys.modules


def test_worker_start_syncs_topics_but_keeps_operator_overrides():
    Topic.objects.all().delete()
    Topic.objects.create(name="echo", concurrency=3, is_paused=False, default_priority=9, max_attempts=7,
                         timeout=5, operator_overrides=["concurrency", "default_priority"])
    run_worker("echo")
    echo = Topic.objects.get(name="echo")
    assert (echo.concurrency, echo.default_priority) == (3, 9)  # an operator's choice
    assert (echo.max_attempts, echo.timeout) == (2, 30)  # back to the handler's
    # Every registered topic got its row, not only the served ones.
    assert set(registry.topics()) <= set(Topic.objects.values_list("name", flat=True))


def test_post_migrate_syncs_topics_and_keeps_overrides():
    Topic.objects.all().delete()
    Topic.objects.create(name="flaky", max_attempts=9, is_paused=True, operator_overrides=["max_attempts"])
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert set(registry.topics()) <= set(Topic.objects.values_list("name", flat=True))
    flaky = Topic.objects.get(name="flaky")
    assert flaky.max_attempts == 9
    assert flaky.is_paused  # a handler never pauses or resumes a topic
    assert flaky.retry_backoff == 0.05


def test_handler_sees_payload_attempt_and_returns_json():
    job = Job.objects.enqueue("inspect", {"x": [1, 2]})
    run_worker("inspect")
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.result["payload"] == {"x": [1, 2]}
    assert job.result["attempt"] == 1
    assert job.result["data_dir"] is None
    assert job.result["pid"] == os.getpid()  # inline: in the worker's process
    assert job.progress == 100 and job.finished_at is not None


def test_result_that_is_not_json_fails_the_job():
    job = Job.objects.enqueue("badresult")
    run_worker("badresult")
    job.refresh_from_db()
    assert job.status == "failed"
    assert "not JSON" in job.error


# -- progress -------------------------------------------------------------------------


def _progress_writes(queries):
    return [q for q in queries if q["sql"].startswith("UPDATE") and '"progress_message" = ' in q["sql"]]


def test_progress_writes_are_throttled():
    job = Job.objects.enqueue("progress")
    with jobqueue_settings(PROGRESS_THROTTLE_SECONDS=60), CaptureQueriesContext(connection) as ctx:
        for i in range(1, 60):
            job.set_progress(i, f"step {i}")
    assert len(_progress_writes(ctx.captured_queries)) == 1  # the first report only
    assert Job.objects.get(pk=job.pk).progress == 1
    with jobqueue_settings(PROGRESS_THROTTLE_SECONDS=60), CaptureQueriesContext(connection) as ctx:
        job.set_progress(70, "new stage", stage="uploading")  # a new stage always lands
        job.set_progress(100, "done")  # and so does the end
    assert len(_progress_writes(ctx.captured_queries)) == 2
    job.refresh_from_db()
    assert (job.progress, job.progress_message, job.stage) == (100, "done", "uploading")


def test_progress_rejects_nonsense():
    job = Job.objects.enqueue("progress")
    for bad in ("50", float("nan"), True, [1]):
        with pytest.raises(ValueError):
            job.set_progress(bad)


def test_handler_progress_is_visible_after_the_run():
    job = Job.objects.enqueue("progress")
    run_worker("progress")
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert (job.progress_message, job.stage) == ("half way", "working")


@pytest.mark.parametrize("fail", [False, True])
def test_last_throttled_progress_report_lands(fail):
    job = Job.objects.enqueue("progress_many", {"fail": fail}, max_attempts=1)
    with jobqueue_settings(PROGRESS_THROTTLE_SECONDS=60), CaptureQueriesContext(connection) as ctx:
        run_worker("progress_many")
    job.refresh_from_db()
    assert job.status == ("failed" if fail else "succeeded")
    assert job.progress_message == "last words"
    if fail:
        assert job.progress == 42
    # 40 reports, two writes: the first and, when the attempt ended, the last.
    assert len(_progress_writes(ctx.captured_queries)) == 2


@pytest.mark.parametrize("fail", [False, True])
def test_last_throttled_progress_report_of_a_child_lands(fail):
    job = Job.objects.enqueue("progress_many", {"fail": fail}, max_attempts=1)
    with jobqueue_settings(PROGRESS_THROTTLE_SECONDS=60):
        run_worker("progress_many", isolation="process")
    job.refresh_from_db()
    assert job.status == ("failed" if fail else "succeeded")
    assert job.progress_message == "last words"
    if fail:
        assert job.progress == 42


# -- retries and failures -------------------------------------------------------------


def test_failing_handler_retries_then_succeeds():
    job = Job.objects.enqueue("flaky", {"succeed_on": 3})
    run_worker("flaky")
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.result == {"attempt": 3}
    assert job.attempts == 3
    outcomes = list(job.executions.order_by("attempt").values_list("attempt", "outcome"))
    assert outcomes == [(1, "retry"), (2, "retry"), (3, "succeeded")]


def test_job_waiting_for_a_retry_is_scheduled():
    job = Job.objects.enqueue("flaky", {"succeed_on": 2})
    before = timezone.now()
    run_worker("flaky", max_jobs=1)
    job.refresh_from_db()
    assert job.status == "scheduled"
    assert job.run_after > before
    assert "attempt 1 failed" in job.error
    assert engine.depths("flaky")["scheduled"] == 1
    run_worker("flaky")
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2


def test_last_failure_fails_the_job_with_a_traceback():
    job = Job.objects.enqueue("flaky", {"succeed_on": 99})
    run_worker("flaky")
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.attempts == 3
    assert "RuntimeError: attempt 3 failed" in job.error
    last = job.executions.get(attempt=3)
    assert last.outcome == "failed"
    assert "Traceback" in last.traceback and "raise RuntimeError" in last.traceback
    assert engine.depths("flaky") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_retry_exception_asks_for_another_attempt():
    job = Job.objects.enqueue("retry")
    run_worker("retry")
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result == "done"
    first = job.executions.get(attempt=1)
    assert first.outcome == "retry"
    assert "not yet" in first.error


def test_backoff_is_exponential_with_jitter_and_capped():
    job = Job.objects.enqueue("flaky")
    job.topic.retry_backoff = 2.0
    for attempt in (1, 2, 3, 4):
        delays = {backoff_delay(job, attempt) for _ in range(50)}
        nominal = 2.0 * 2 ** (attempt - 1)
        assert all(0.75 * nominal <= d <= 1.25 * nominal for d in delays)
        assert len(delays) > 1  # jittered
    with jobqueue_settings(MAX_RETRY_DELAY=10):
        assert all(backoff_delay(job, 20) <= 12.5 for _ in range(20))


# -- timeouts and isolation -----------------------------------------------------------


def test_inline_timeout():
    job = Job.objects.enqueue("sleepy", {"seconds": 5})
    run_worker("sleepy")
    job.refresh_from_db()
    assert job.status == "failed"
    execution = job.executions.get()
    assert execution.outcome == "timeout"
    assert "Timed out" in execution.error
    assert execution.duration < 4


def test_process_isolation_captures_output_and_exit_code():
    ok = Job.objects.enqueue("loud")
    bad = Job.objects.enqueue("loud", {"fail": True}, max_attempts=1)
    run_worker("loud")
    ok.refresh_from_db()
    bad.refresh_from_db()
    assert ok.status == "succeeded" and ok.result == {"pid_differs": True}
    e = ok.executions.get()
    assert (e.outcome, e.exit_code) == ("succeeded", 0)
    assert "hello from the child" in e.stdout
    assert "warning!" in e.stderr
    assert bad.status == "failed"
    e = bad.executions.get()
    assert e.outcome == "failed" and e.exit_code != 0
    assert "ValueError: boom" in e.error
    assert "ValueError: boom" in e.stderr and "raise ValueError" in e.traceback


def test_process_isolation_runs_in_another_process():
    job = Job.objects.enqueue("inspect")
    run_worker("inspect", isolation="process")
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.result["pid"] != os.getpid()


def test_process_hard_timeout_kills_the_child():
    job = Job.objects.enqueue("sleepy", {"seconds": 30})
    run_worker("sleepy", isolation="process")
    job.refresh_from_db()
    assert job.status == "failed"
    e = job.executions.get()
    assert e.outcome == "timeout"
    assert e.exit_code == -9  # SIGKILL
    assert e.duration < 20


def test_one_execution_per_attempt_with_its_details():
    job = Job.objects.enqueue("flaky", {"succeed_on": 2})
    worker = run_worker("flaky", worker_id="exec-test")
    rows = list(Execution.objects.filter(job=job).order_by("attempt"))
    assert [r.attempt for r in rows] == [1, 2]
    for row in rows:
        assert row.worker_id == worker.worker_id == "exec-test"
        assert row.hostname == HOSTNAME
        assert row.pid == os.getpid()
        assert row.started_at <= row.finished_at
        assert row.duration is not None and row.duration >= 0
    assert rows[0].outcome == "retry" and "attempt 1 failed" in rows[0].error and rows[0].traceback
    assert rows[1].outcome == "succeeded" and rows[1].error == "" and rows[1].traceback == ""


# -- scheduling -----------------------------------------------------------------------


def test_scheduled_job_is_queued_when_due_and_promoted_once():
    job = Job.objects.enqueue("echo", {"later": True}, delay=0.3)
    assert job.status == "scheduled"
    assert maintenance.promote(["echo"]) == 0  # not due yet
    job.refresh_from_db()
    assert job.status == "scheduled"
    from tests.workerutil import wait_for

    wait_for(lambda: timezone.now() > job.run_after + timezone.timedelta(milliseconds=20), 5, "the due time")
    assert maintenance.promote(["echo"]) == 1
    assert maintenance.promote(["echo"]) == 0  # a second worker's pass finds nothing
    job.refresh_from_db()
    assert job.status == "queued"
    assert engine.queue_ids("echo") == [str(job.pk)]
    run_worker("echo")
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert job.executions.count() == 1


# -- burst and max jobs ---------------------------------------------------------------


def test_max_jobs_stops_the_worker():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3)]
    worker = run_worker("echo", burst=False, max_jobs=2)
    assert worker.processed == 2
    assert sorted(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)) == [
        "queued", "succeeded", "succeeded"]


def test_burst_worker_serves_only_its_topics_and_releases_its_slots():
    mine = Job.objects.enqueue("echo")
    other = Job.objects.enqueue("other")
    run_worker("echo")
    assert Job.objects.get(pk=mine.pk).status == "succeeded"
    assert Job.objects.get(pk=other.pk).status == "queued"
    assert engine.TopicLock.holders("echo") == []
    assert engine.live_workers() == []


def test_unknown_topic_is_refused():
    with pytest.raises(ValueError, match="Unknown topic"):
        Worker(topics=["no-such-topic"], install_signals=False, burst=True).run()


# -- cancelling pending jobs ----------------------------------------------------------


def test_cancel_pending_jobs_removes_them_from_redis(redis_client):
    from jobqueue.engine import TopicKeys

    queued = Job.objects.enqueue("echo", {"q": 1}, entity_id="ent-q")
    scheduled = Job.objects.enqueue("echo", {"s": 1}, delay=60, entity_id="ent-s")
    waiting = Job.objects.enqueue("echo", {"w": 1}, depends_on=[queued])
    assert waiting.status == "waiting"
    keys = TopicKeys("echo")
    assert redis_client.hlen(keys.entities) == 2
    for job in (waiting, queued, scheduled):  # waiting first: cancelling queued would cancel it too
        assert job.cancel() is True
        job.refresh_from_db()
        assert job.status == "cancelled" and job.finished_at is not None
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}
    assert redis_client.hlen(keys.entities) == 0
    # The entity is free again: a new job, not the cancelled one.
    again = Job.objects.enqueue("echo", entity_id="ent-q")
    assert again.pk != queued.pk and again.status == "queued"
    run_worker("echo")
    assert Job.objects.get(pk=again.pk).status == "succeeded"
    assert not Execution.objects.filter(job__in=[queued, scheduled, waiting]).exists()
    from jobqueue.exceptions import InvalidTransition

    with pytest.raises(InvalidTransition):
        queued.cancel()
