"""``jobs list|info|requeue|cancel|rm|purge|stats|resync|rerun``."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobqueue import engine
from jobqueue.models import Execution, Job
from jobqueue.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def jobs(*args: str) -> str:
    out = io.StringIO()
    call_command("jobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def jobs_error(*args: str) -> tuple[str, str]:
    """Run a command that must fail: its CommandError text and what it wrote to stderr."""
    err = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("jobs", *args, stdout=io.StringIO(), stderr=err)
    return str(info.value), err.getvalue()


def run_worker(*topics: str) -> None:
    assert Worker(topics=list(topics), install_signals=False, burst=True).run() == 0


def make_failed() -> Job:
    job = Job.objects.enqueue("flaky", {"succeed_on": 99}, max_attempts=1)
    run_worker("flaky")
    job.refresh_from_db()
    assert job.status == "failed"
    return job


def set_status(job: Job, status: str, **values) -> Job:
    Job.objects.filter(pk=job.pk).update(status=status, **values)
    job.refresh_from_db()
    return job


# -- list and info --------------------------------------------------------------------


def test_list_filters_and_formats():
    queued = Job.objects.enqueue("echo", {"a": 1}, entity_id="ent-1")
    failed = make_failed()
    other = Job.objects.enqueue("other")
    table = jobs("list")
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "TOPIC", "STATUS", "PRIO", "PROGRESS", "TRIES", "CREATED", "ENTITY"]
    assert all(str(j.pk) in table for j in (queued, failed, other))
    assert "ent-1" in table

    only_failed = jobs("list", "--status", "failed")
    assert str(failed.pk) in only_failed and str(queued.pk) not in only_failed
    by_topic = jobs("list", "--topic", "other")
    assert str(other.pk) in by_topic and str(queued.pk) not in by_topic
    assert len(jobs("list", "-n", "1").splitlines()) == 3  # header, rule, one job

    rows = [json.loads(line) for line in jobs("list", "--json").splitlines()]
    assert {r["id"] for r in rows} == {str(queued.pk), str(failed.pk), str(other.pk)}
    row = next(r for r in rows if r["id"] == str(queued.pk))
    assert (row["topic"], row["status"], row["payload"], row["entity_id"]) == ("echo", "queued", {"a": 1}, "ent-1")


def test_list_rejects_bad_options():
    assert "invalid choice" in jobs_error("list", "--status", "exploded")[0]
    assert "at least 1" in jobs_error("list", "-n", "0")[0]


def test_info_shows_the_job_and_its_executions():
    job = make_failed()
    text = jobs("info", str(job.pk))
    assert str(job.pk) in text and "failed" in text
    assert "--- attempt 1: failed" in text
    assert "RuntimeError: attempt 1 failed" in text
    data = json.loads(jobs("info", str(job.pk), "--json"))
    assert data["id"] == str(job.pk) and data["status"] == "failed"
    assert [e["outcome"] for e in data["executions"]] == ["failed"]


def test_info_escapes_control_characters():
    # A handler's text could clear the screen, set the window title or move the cursor.
    job = Job.objects.enqueue("echo", {"note": "\x9b2J"})
    job = set_status(job, "failed", error="\x1b[2J\x1b]0;owned\x07boom\r\nsecond line",
                     progress_message="\x9b31m", stage="\x1b[1A", worker_id="w\x1b[K")
    Execution.objects.create(job=job, attempt=1, outcome="failed", worker_id="w", error="\x1bc",
                             stdout="out\x1b[31m\n", stderr="\x07err", traceback="Traceback\x1b[0m")
    text = jobs("info", str(job.pk))
    assert not any(c in text for c in "\x1b\x07\x9b\r"), repr(text)
    assert "\\x1b[2J\\x1b]0;owned\\x07boom\\x0d\nsecond line" in text  # line feeds stay
    for escaped in ("\\x9b31m", "\\x1b[1A", "w\\x1b[K", "\\x1bc", "out\\x1b[31m", "\\x07err",
                    "Traceback\\x1b[0m", "\\x9b2J"):
        assert escaped in text, escaped


def test_info_of_a_queued_job_shows_its_position():
    Job.objects.enqueue("echo")
    second = Job.objects.enqueue("echo")
    assert "position: 1" in " ".join(jobs("info", str(second.pk)).split())


def test_unknown_or_malformed_ids_are_refused():
    missing = uuid.uuid4()
    for action in ("info", "requeue", "cancel", "rm", "rerun"):
        assert f"No job with id {missing}" in jobs_error(action, str(missing))[0]
        assert "not a job id" in jobs_error(action, "nope")[0]


# -- requeue, cancel, rm --------------------------------------------------------------


def test_requeue_a_failed_job():
    job = make_failed()
    assert jobs("requeue", str(job.pk)).strip() == f"requeued {job.pk}"
    job.refresh_from_db()
    assert (job.status, job.attempts, job.error) == ("queued", 0, "")
    assert engine.queue_ids("flaky") == [str(job.pk)]


def test_requeue_a_running_or_queued_job_is_refused():
    running = set_status(Job.objects.enqueue("echo"), "running")
    queued = Job.objects.enqueue("other")
    message, stderr = jobs_error("requeue", str(running.pk), str(queued.pk))
    assert "2 of 2 job(s) could not be requeued" in message
    assert f"Job {running.pk} is running" in stderr
    assert f"Job {queued.pk} is queued" in stderr
    assert Job.objects.get(pk=running.pk).status == "running"


def test_requeue_is_refused_while_the_entity_has_another_active_job():
    failed = set_status(Job.objects.enqueue("echo", entity_id="img-1"), "failed", finished_at=timezone.now())
    engine.remove("echo", str(failed.pk), "img-1")  # as the worker that failed it did
    active = Job.objects.enqueue("echo", entity_id="img-1")
    message, stderr = jobs_error("requeue", str(failed.pk))
    assert "1 of 1 job(s) could not be requeued" in message
    assert "'img-1' already has an active job" in stderr
    assert Job.objects.get(pk=failed.pk).status == "failed"
    assert engine.queue_ids("echo") == [str(active.pk)]


def test_cancel_pending_jobs_and_refuse_finished_ones():
    queued = Job.objects.enqueue("echo")
    scheduled = Job.objects.enqueue("echo", delay=60)
    assert engine.depths("echo") == {"queued": 1, "leased": 0, "scheduled": 1}
    out = jobs("cancel", str(queued.pk), str(scheduled.pk))
    assert out.split() == ["cancelled", str(queued.pk), "cancelled", str(scheduled.pk)]
    assert set(Job.objects.values_list("status", flat=True)) == {"cancelled"}
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}
    message, stderr = jobs_error("cancel", str(queued.pk))
    assert "could not be cancelled" in message and "is cancelled" in stderr


def test_rm_deletes_finished_jobs_only():
    failed = make_failed()
    queued = Job.objects.enqueue("echo")
    assert jobs("rm", str(failed.pk)).strip() == f"removed {failed.pk}"
    assert not Job.objects.filter(pk=failed.pk).exists()
    message, stderr = jobs_error("rm", str(queued.pk))
    assert "could not be removed" in message and "only finished jobs" in stderr
    assert Job.objects.filter(pk=queued.pk).exists()


# -- purge ----------------------------------------------------------------------------


def test_purge_older_than():
    now = timezone.now()
    old_ok = set_status(Job.objects.enqueue("echo"), "succeeded", finished_at=now - dt.timedelta(days=8))
    old_failed = set_status(Job.objects.enqueue("echo"), "failed", finished_at=now - dt.timedelta(days=9))
    recent = set_status(Job.objects.enqueue("echo"), "succeeded", finished_at=now - dt.timedelta(days=1))
    pending = Job.objects.enqueue("echo")

    assert jobs("purge", "--older-than", "7d", "--dry-run").startswith("would delete 2 job(s)")
    assert Job.objects.count() == 4
    assert jobs("purge", "--older-than", "7d", "--status", "failed").startswith("deleted 1 job(s)")
    assert not Job.objects.filter(pk=old_failed.pk).exists()
    assert jobs("purge", "--older-than", "7d").startswith("deleted 1 job(s)")
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
    assert not Job.objects.filter(pk=old_ok.pk).exists()


def test_purge_needs_a_valid_duration_and_status():
    assert "Invalid duration" in jobs_error("purge", "--older-than", "a week")[0]
    assert "required" in jobs_error("purge")[0]
    assert "invalid choice" in jobs_error("purge", "--older-than", "7d", "--status", "queued")[0]
    assert "too long" in jobs_error("purge", "--older-than", "99999999d")[0]
    assert "too long" in jobs_error("purge", "--older-than", "1000000000d")[0]


# -- stats and resync -----------------------------------------------------------------


def test_stats():
    Job.objects.enqueue("echo")
    Job.objects.enqueue("echo")
    make_failed()
    table = jobs("stats")
    echo_row = next(line.split() for line in table.splitlines() if line.startswith("echo "))
    assert echo_row[:4] == ["echo", "0", "0", "2"]  # waiting, scheduled, queued
    assert "0 live worker(s)" in table
    data = json.loads(jobs("stats", "--json"))
    assert data["topics"]["echo"]["queued"] == 2
    assert data["topics"]["flaky"]["failed"] == 1
    assert data["workers"] == []


def test_resync_rebuilds_redis_after_a_flush(redis_client):
    a = Job.objects.enqueue("echo", priority=1)
    b = Job.objects.enqueue("echo", priority=5)
    later = Job.objects.enqueue("echo", delay=60)
    redis_client.flushdb()
    assert engine.queue_ids("echo") == []
    out = jobs("resync")
    assert out.startswith("pushed 2, scheduled 1")
    assert engine.queue_ids("echo") == [str(b.pk), str(a.pk)]
    assert engine.depths("echo")["scheduled"] == 1
    assert later.status == "scheduled"
    assert jobs("resync", "echo").startswith("pushed 0, scheduled 0")
    assert "Unknown topic(s): nope" in jobs_error("resync", "nope")[0]


# -- rerun ----------------------------------------------------------------------------


def test_rerun_runs_the_handler_without_changing_the_job():
    job = Job.objects.enqueue("echo", {"again": True})
    assert json.loads(jobs("rerun", str(job.pk))) == {"again": True}
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 0)
    assert job.executions.count() == 0


def test_rerun_of_a_failing_handler_fails():
    job = make_failed()
    message, stderr = jobs_error("rerun", str(job.pk))
    assert "failed" in message
    assert "RuntimeError" in stderr
    assert Job.objects.get(pk=job.pk).attempts == 1
