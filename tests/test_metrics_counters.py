"""The metrics kept in Redis: counted by the transitions' own Redis calls as real workers
run jobs, read back in one pipeline, and rebuilt from the tables after a FLUSHDB."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from django.db import transaction
from django.utils import timezone

from jobqueue import conf, engine
from jobqueue.contrib.metrics.collector import gather
from jobqueue.engine import metrics
from jobqueue.models import Execution, Job
from jobqueue.resync import resync
from jobqueue.worker import maintenance
from jobqueue.worker.lifecycle import claim
from tests.workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)

NOTHING = dict.fromkeys(metrics.COUNTERS, 0.0)


def counters(topic: str) -> dict[str, float]:
    return metrics.read([topic])[topic].counters


def lose(*jobs: Job) -> None:
    """Lease and claim ``jobs`` for a worker that then dies, and let maintenance find them."""
    topic = jobs[0].topic_id
    assert sorted(engine.pop(topic, len(jobs), lease_seconds=0.1)) == sorted(str(job.pk) for job in jobs)
    for job in jobs:
        assert claim(str(job.pk), "w-dead", os.getpid()) is not None
    time.sleep(0.2)
    assert maintenance.reap([topic]) == len(jobs)


def test_every_way_of_creating_a_job_counts_it_once_it_commits():
    Job.objects.enqueue("echo")
    later = Job.objects.enqueue("echo", delay=60)
    Job.objects.enqueue("echo", depends_on=[later])  # waiting: in no queue, only counted
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(3)])
    Job.objects.enqueue("echo", entity_id="e1")
    assert Job.objects.enqueue("echo", entity_id="e1").entity_id == "e1"  # the same job again: not counted
    with pytest.raises(RuntimeError), transaction.atomic():
        Job.objects.enqueue("echo")
        raise RuntimeError("rolled back")
    with transaction.atomic():
        Job.objects.enqueue("echo")
        assert counters("echo")["enqueued"] == 7  # not before the commit
    assert counters("echo") == {**NOTHING, "enqueued": 8}
    assert Job.objects.count() == 8


def test_counters_and_histograms_follow_a_real_worker_run():
    Job.objects.enqueue("flaky", {"succeed_on": 1})  # succeeds at once
    Job.objects.enqueue("flaky", {"succeed_on": 2})  # one retry, then succeeds
    Job.objects.enqueue("flaky", {"succeed_on": 9})  # two retries, then fails (max_attempts=3)
    assert counters("flaky") == {**NOTHING, "enqueued": 3}

    run_worker("flaky")

    reading = metrics.read(["flaky"])["flaky"]
    assert reading.counters == {"enqueued": 3, "succeeded": 2, "failed": 1, "retried": 3, "lost": 0}
    attempts = Execution.objects.filter(job__topic_id="flaky").count()
    assert attempts == 6
    run, wait = reading.histograms["run"], reading.histograms["wait"]
    assert run.count == wait.count == attempts
    assert run.buckets == sorted(run.buckets)  # cumulative
    assert 0 < run.sum < 30 and 0 < wait.sum < 30
    assert (reading.queued, reading.scheduled, reading.running) == (0, 0, 0)


def test_a_success_counted_in_the_fused_acknowledgement_is_counted_once():
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(20)])
    run_worker("echo", max_jobs=7)
    assert counters("echo")["succeeded"] == 7
    run_worker("echo")
    reading = metrics.read(["echo"])["echo"]
    assert reading.counters["succeeded"] == 20
    assert reading.histograms["run"].count == reading.histograms["wait"].count == 20


def test_lost_attempts_are_counted_and_a_lost_last_attempt_fails_the_job():
    again = Job.objects.enqueue("echo")  # max_attempts=2: requeued
    last = Job.objects.enqueue("echo", max_attempts=1)
    lose(again, last)
    assert counters("echo") == {**NOTHING, "enqueued": 2, "lost": 2, "failed": 1}
    assert Job.objects.get(pk=last.pk).status == "failed"
    run_worker("echo")
    assert counters("echo") == {**NOTHING, "enqueued": 2, "lost": 2, "failed": 1, "succeeded": 1}
    assert Job.objects.get(pk=again.pk).status == "succeeded"


def test_after_flushdb_a_worker_rebuilds_the_counters_from_the_tables(redis_client):
    Job.objects.enqueue("flaky", {"succeed_on": 2})
    Job.objects.enqueue("flaky", {"succeed_on": 9})
    first = Job.objects.enqueue("flaky", {"succeed_on": 1})
    Job.objects.enqueue("flaky", {"succeed_on": 1}, depends_on=[first])
    lose(Job.objects.enqueue("echo", max_attempts=1))
    Job.objects.enqueue("echo")
    run_worker("flaky", "echo")
    before = metrics.read(["flaky", "echo"])
    assert before["flaky"].counters == {"enqueued": 4, "succeeded": 3, "failed": 1, "retried": 3, "lost": 0}
    assert before["echo"].counters == {"enqueued": 2, "succeeded": 1, "failed": 1, "retried": 0, "lost": 1}

    redis_client.flushdb()
    assert counters("flaky") == NOTHING
    run_worker("flaky", "echo")  # its start rebuilds Redis from the database
    after = metrics.read(["flaky", "echo"])
    for topic in ("flaky", "echo"):
        assert after[topic].counters == before[topic].counters
        assert after[topic].since is not None
        run = after[topic].histograms["run"]
        assert run.count == before[topic].histograms["run"].count
        assert run.sum == pytest.approx(before[topic].histograms["run"].sum, abs=0.5)
    assert before["echo"].histograms["wait"].count == 2  # a lost attempt's wait is observed, not its run
    assert before["echo"].histograms["run"].count == 1
    # One wait per started job survives in the table: its last attempt's.
    assert after["flaky"].histograms["wait"].count == 4
    assert after["echo"].histograms["wait"].count == 2

    # Counting goes on from the rebuilt values; a resync leaves a built hash alone.
    Job.objects.enqueue("echo")
    report = resync(["flaky", "echo"])
    assert report.metrics == []
    assert counters("echo")["enqueued"] == 3


def test_a_rebuild_counts_what_the_tables_hold_for_jobs_never_counted(redis_client):
    """Jobs from before the counters existed are counted by the first resync."""
    Job.objects.enqueue("echo")
    run_worker("echo")
    Job.objects.enqueue("echo", delay=60)
    redis_client.delete(engine.topic_keys("echo").metrics)
    Job.objects.enqueue("echo")  # counted live into a hash that was never built
    report = resync(["echo"])
    assert report.metrics == ["echo"]
    assert counters("echo") == {**NOTHING, "enqueued": 3, "succeeded": 1}


def test_queue_gauges_and_the_age_of_the_longest_queued_job(redis_client):
    now = timezone.now()
    ages = {0: 100, 5: 10, -5: 500}  # priority -> seconds queued; the oldest runs last
    for priority, age in ages.items():
        job = Job.objects.enqueue("echo", priority=priority)
        Job.objects.filter(pk=job.pk).update(queued_at=now - dt.timedelta(seconds=age))
        Job.objects.enqueue("echo", priority=priority)  # newer, behind it
    Job.objects.enqueue("echo", delay=60)
    Job.objects.enqueue("echo", depends_on=[Job.objects.enqueue("other", delay=60)])
    engine.pop("echo", 1)  # leased: counted as running

    redis_client.script_flush()  # the scrape's script is loaded again when Redis lost it
    snapshot = gather()
    echo = snapshot.topics["echo"]
    assert (echo.queued, echo.scheduled, echo.running) == (5, 1, 1)
    assert snapshot.waiting == {"echo": 1}
    assert snapshot.oldest_age["echo"] == pytest.approx(500, abs=5)
    assert "other" not in snapshot.oldest_age  # nothing queued
    assert set(snapshot.topics) >= {"echo", "other"}


def test_live_workers_come_from_the_registry_without_stale_ones(redis_client):
    engine.beat("w-fresh", {"topics": ["echo", "other"]})
    engine.beat("w-idle", {"topics": []})
    stale = {"id": "w-stale", "topics": ["echo"], "beat": time.time() - conf.settings.WORKER_STALE_SECONDS - 5}
    redis_client.hset(engine.workers_key(), "w-stale", json.dumps(stale))
    snapshot = gather()
    assert snapshot.workers == 2
    assert snapshot.topic_workers == {"echo": 1, "other": 1}
    assert redis_client.hexists(engine.workers_key(), "w-stale")  # a scrape changes nothing


def test_tallies_name_fields_of_the_hash():
    assert metrics.tally("succeeded", wait=0.01, run=7) == (
        "succeeded=1 wait:0.025=1 wait:us=10000 run:10=1 run:us=7000000"
    )
    assert metrics.tally(run=99999) == "run:+Inf=1 run:us=99999000000"
    assert metrics.tally(wait=-1) == "wait:0.005=1 wait:us=0"  # clocks apart: never negative
    assert metrics.tally(wait=0.005) == "wait:0.005=1 wait:us=5000"  # a bucket holds its upper bound
    assert set(metrics.field_names()) >= {"enqueued", "run:+Inf", "wait:us"}
