"""Requeueing or deleting finished jobs that the metrics tally already counts takes them off
it, in the same transaction: the job counts of ``GET /stats`` and the admin stay the rows
the table holds, on every path that requeues or deletes, and against a roll-up running at
the same time. The rest of the tally (executions, waits, ``enqueued``) is history and stays."""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobqueue import dashboard
from jobqueue import resync as resync_module
from jobqueue.models import Job, JobStatus, MetricsTally, Topic
from jobqueue.resync import job_counts, roll_up
from jobqueue.tally import JOBS_FIELD
from jobqueue.transitions import bulk
from tests.test_admin_support import TOPIC_CHANGELIST, confirm, superuser_client
from tests.test_api import Api, token_for
from tests.test_metrics_job_counts import TOPICS, every_status, plain_counts
from tests.test_metrics_tally import AGO, backdate
from tests.workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
#: How long a thread may wait for the other side of a race before the test gives up.
WAIT = 20


def rolled_up() -> None:
    """Jobs in every status, the finished ones rolled up into the tally."""
    every_status()
    backdate()
    assert roll_up() is False
    tally = MetricsTally.objects.get(topic="flaky").counts
    assert (tally["jobs:succeeded"], tally["jobs:failed"]) == (3, 1)
    assert MetricsTally.objects.get(topic="echo").counts["jobs:cancelled"] == 1


def exact() -> dict[str, dict[str, int]]:
    """The job counts, checked against a plain count of the rows."""
    expected = plain_counts()
    assert job_counts(TOPICS) == expected
    return expected


def history() -> dict[str, dict[str, Any]]:
    """The tally's metrics (all but the finished jobs by status): what nothing takes off."""
    return {row.topic: {k: v for k, v in row.counts.items() if not k.startswith(JOBS_FIELD)}
            for row in MetricsTally.objects.exclude(topic="")}


def cancelled_after_the_watermark(topic: str = "echo") -> Job:
    job = Job.objects.enqueue(topic)
    job.cancel()
    job.refresh_from_db()
    assert job.finished_at > MetricsTally.objects.get(topic="").until
    return job


# -- requeue --------------------------------------------------------------------------------


def test_requeueing_a_rolled_up_job_takes_it_off_and_its_next_finish_counts_once():
    rolled_up()
    kept = history()
    failed = Job.objects.get(topic_id="flaky", status=JobStatus.FAILED)
    failed.requeue()
    counts = exact()
    assert counts["flaky"][JobStatus.FAILED] == 0
    assert MetricsTally.objects.get(topic="flaky").counts["jobs:failed"] == 0
    assert history() == kept

    run_worker("flaky")  # it fails again (and the others of the topic finish): live rows
    failed.refresh_from_db()
    assert failed.status == JobStatus.FAILED
    failures = exact()["flaky"][JobStatus.FAILED]
    backdate()
    roll_up()
    assert exact()["flaky"][JobStatus.FAILED] == failures
    assert MetricsTally.objects.get(topic="flaky").counts["jobs:failed"] == failures


def test_a_bulk_requeue_takes_off_the_jobs_before_the_watermark_and_only_those():
    rolled_up()
    kept = history()
    recent = cancelled_after_the_watermark()
    result = bulk.requeue(Job.objects.filter(status__in=[JobStatus.FAILED, JobStatus.CANCELLED]), chunk_size=1)
    assert result.changed == 3
    counts = exact()
    assert counts["echo"][JobStatus.CANCELLED] == counts["flaky"][JobStatus.FAILED] == 0
    assert MetricsTally.objects.get(topic="echo").counts["jobs:cancelled"] == 0  # not -1: one was live
    assert history() == kept

    # The next roll-up passes where the recent one had finished: queued now, it is not counted.
    roll_up(now=timezone.now() + AGO)
    assert MetricsTally.objects.get(topic="").until > recent.finished_at
    exact()


def test_the_admin_topic_list_shows_no_failed_job_after_requeue_failed():
    rolled_up()
    root = superuser_client()
    data = {"action": "requeue_failed", "index": 0, "select_across": "0",
            "_selected_action": [Topic.objects.get(name="flaky").pk]}
    assert root.post(TOPIC_CHANGELIST, data, follow=True).status_code == 200
    exact()
    flaky = next(t for t in root.get(TOPIC_CHANGELIST).context["cl"].result_list if t.name == "flaky")
    assert flaky.jq_stats.count("failed") == 0
    assert dashboard.topic_stats(["flaky"])["flaky"].counts[JobStatus.FAILED] == 0


def test_a_requeue_through_the_api_takes_the_job_off():
    rolled_up()
    api = Api(token_for(User.objects.create_superuser("root", "root@example.com", None)))
    failed = Job.objects.get(topic_id="flaky", status=JobStatus.FAILED)
    assert api.call("POST", f"/jobs/{failed.pk}/requeue", {}).status_code == 200
    assert exact()["flaky"][JobStatus.FAILED] == 0
    body = api.get("/stats").json()
    assert {t["topic"]: t["by_status"] for t in body["topics"]}["flaky"][JobStatus.FAILED] == 0


# -- delete ---------------------------------------------------------------------------------


def queryset_delete(jobs: list[Job]) -> None:
    Job.objects.filter(pk__in=[j.pk for j in jobs]).delete()


def model_delete(jobs: list[Job]) -> None:
    for job in jobs:
        job.delete()


def purge_command(jobs: list[Job]) -> None:
    # Every finished job older than a minute: the rolled-up ones, not the recent one.
    out = io.StringIO()
    call_command("jobs", "purge", "--older-than", "1m", stdout=out)
    assert out.getvalue().startswith("deleted 6 job(s)")


def admin_delete_action(jobs: list[Job]) -> None:
    response = confirm(superuser_client(), "delete_jobs", jobs, post="yes", follow=True)
    assert response.status_code == 200


def admin_delete_view(jobs: list[Job]) -> None:
    # The admin's own delete page refuses a job with executions (they cannot be deleted by
    # hand): the jobs without any (cancelled before they ran) go there, the others by action.
    root = superuser_client()
    bare = [j for j in jobs if not j.executions.exists()]
    assert bare
    for job in bare:
        response = root.post(reverse("admin:jobqueue_job_delete", args=[job.pk]), {"post": "yes"})
        assert response.status_code == 302, response.content
    confirm(root, "delete_jobs", [j for j in jobs if j not in bare], post="yes")


def api_delete(jobs: list[Job]) -> None:
    api = Api(token_for(User.objects.create_superuser("root", "root@example.com", None)))
    for job in jobs:
        assert api.call("DELETE", f"/jobs/{job.pk}").status_code == 204


@pytest.mark.parametrize(
    "delete", [queryset_delete, model_delete, purge_command, admin_delete_action, admin_delete_view, api_delete]
)
def test_deleting_finished_jobs_takes_the_rolled_up_ones_off(delete: Callable[[list[Job]], None]):
    rolled_up()
    kept = history()
    cancelled_after_the_watermark()
    jobs = list(Job.objects.filter(status__in=FINISHED))
    assert len(jobs) == 7
    delete(jobs)
    assert Job.objects.filter(status__in=FINISHED).count() == (1 if delete is purge_command else 0)
    counts = exact()
    assert counts["flaky"][JobStatus.SUCCEEDED] == counts["flaky"][JobStatus.FAILED] == 0
    tally = {row.topic: row.counts for row in MetricsTally.objects.exclude(topic="")}
    assert {name: n for counts in tally.values() for name, n in counts.items() if name.startswith(JOBS_FIELD) and n} \
        == {}
    assert history() == kept
    roll_up(now=timezone.now() + AGO)
    exact()


def test_a_delete_reads_the_jobs_once_whatever_their_number():
    """The purge deletes millions of rows a chunk at a time: what the tally adds to a chunk's
    delete is one aggregate over its jobs, not a read per job."""
    rolled_up()

    def statements(jobs: list[Job]) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            Job.objects.filter(pk__in=[j.pk for j in jobs]).delete()
        return [q["sql"] for q in queries.captured_queries]

    one = statements([Job.objects.filter(topic_id="flaky", status=JobStatus.SUCCEEDED).first()])
    many = statements(list(Job.objects.filter(status__in=FINISHED)))
    assert len(many) == len(one)
    assert len([s for s in many if "GROUP BY" in s and "jobqueue_job" in s]) == 1
    exact()


def test_deleting_a_topic_whose_jobs_are_gone_leaves_the_counts_at_zero():
    rolled_up()
    Job.objects.filter(topic_id="echo").delete()
    Topic.objects.filter(name="echo").delete()
    assert job_counts(["echo"])["echo"] == dict.fromkeys(JobStatus.values, 0)
    exact()


# -- a roll-up at the same time ---------------------------------------------------------------


def in_thread(work: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    """``work`` on a connection of its own (closed at the end); its exception in ``errors``."""

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def next_window_job() -> Job:
    """A job cancelled after the watermark, in the window of the next roll-up (moved back,
    watermark and all, so that on PostgreSQL a transaction open now does not hold it back)."""
    rolled_up()
    job = cancelled_after_the_watermark()
    backdate()
    job.refresh_from_db()
    return job


def test_a_roll_up_that_starts_during_a_requeue_waits_for_it():
    job = next_window_job()
    errors: list[BaseException] = []
    requeued, commit = threading.Event(), threading.Event()

    def requeue() -> None:
        with transaction.atomic():
            Job.objects.get(pk=job.pk).requeue()
            requeued.set()
            assert commit.wait(WAIT)

    requeuer = in_thread(requeue, errors)
    assert requeued.wait(WAIT)
    roller = in_thread(lambda: roll_up(now=timezone.now() + AGO), errors)
    roller.join(0.5)  # it reads the rows after the requeue commits, not before
    commit.set()
    requeuer.join(WAIT)
    roller.join(WAIT)
    assert not errors and not requeuer.is_alive() and not roller.is_alive()
    assert MetricsTally.objects.get(topic="").until > job.finished_at  # its window was rolled up
    assert exact()["echo"][JobStatus.CANCELLED] == 1  # the one rolled up before, not this one


@pytest.mark.parametrize("change", ["requeue", "delete"])
def test_a_requeue_or_delete_during_a_roll_up_waits_for_it_then_takes_the_job_off(monkeypatch, change):
    job = next_window_job()
    errors: list[BaseException] = []
    read, go = threading.Event(), threading.Event()
    aggregate = resync_module._aggregate

    def read_then_wait(lower: dt.datetime | None, upper: dt.datetime | None, names: Any) -> Any:
        window = aggregate(lower, upper, names)
        if upper is not None and not read.is_set():
            read.set()
            assert go.wait(WAIT)
        return window

    def act() -> None:
        if change == "requeue":
            Job.objects.get(pk=job.pk).requeue()
        else:
            Job.objects.filter(pk=job.pk).delete()

    monkeypatch.setattr(resync_module, "_aggregate", read_then_wait)
    roller = in_thread(lambda: roll_up(now=timezone.now() + AGO), errors)
    assert read.wait(WAIT)  # the roll-up has counted the job as cancelled
    changer = in_thread(act, errors)
    changer.join(0.5)  # the change reads the watermark once the roll-up has committed
    go.set()
    roller.join(WAIT)
    changer.join(WAIT)
    monkeypatch.undo()
    assert not errors and not changer.is_alive() and not roller.is_alive()
    if change == "requeue":
        assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    else:
        assert not Job.objects.filter(pk=job.pk).exists()
    assert MetricsTally.objects.get(topic="").until > job.finished_at
    assert exact()["echo"][JobStatus.CANCELLED] == 1  # the one rolled up before, not this one
    assert MetricsTally.objects.get(topic="echo").counts["jobs:cancelled"] == 1


def test_requeue_and_delete_before_the_first_roll_up_take_nothing_off():
    """With no watermark yet every row is counted live: nothing to take off, but the watermark
    row is made (and locked), so a first roll-up starting meanwhile waits for them."""
    every_status()
    MetricsTally.objects.all().delete()  # as before any roll-up (the worker's maintenance made one)
    backdate()
    Job.objects.get(topic_id="flaky", status=JobStatus.FAILED).requeue()
    Job.objects.filter(topic_id="echo", status__in=FINISHED).delete()
    assert MetricsTally.objects.get(topic="").until is None  # made by the first, to lock it
    assert set(MetricsTally.objects.values_list("topic", flat=True)) == {""}
    exact()
    roll_up()
    exact()

