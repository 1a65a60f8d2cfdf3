"""Chaining: a succeeded job's ``Next`` (or its topic's ``next_topic``) becomes new
jobs with ``parent`` set, in the same transaction as the success, exactly once."""

from __future__ import annotations

import os
import time

import pytest

from jobqueue import Next, engine
from jobqueue.chaining import from_wire, next_jobs, storable_result, to_wire
from jobqueue.models import Job
from jobqueue.worker import maintenance
from jobqueue.worker.lifecycle import Outcome, claim, finish

from .workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_topic_chain_links_parents():
    first = Job.objects.enqueue("stage1", {"n": 0})
    run_worker("stage1", "stage2", "stage3")
    second = Job.objects.get(parent=first)
    third = Job.objects.get(parent=second)
    assert (first.pk, second.topic_id, third.topic_id) == (first.pk, "stage2", "stage3")
    assert second.payload == {"n": 1}  # stage1's result, through its topic's next_topic
    assert third.payload == {"n": 2}  # stage2's Next(...)
    assert third.result == {"n": 3}
    assert [j.status for j in (second, third)] == ["succeeded", "succeeded"]
    assert not Job.objects.filter(parent=third).exists()
    assert Job.objects.count() == 3


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_fan_out_creates_one_child_per_next(isolation):
    parent = Job.objects.enqueue("fanout", {"count": 4})
    run_worker("fanout", isolation=isolation)
    parent.refresh_from_db()
    children = Job.objects.filter(parent=parent).order_by("created_at")
    assert sorted(c.payload["i"] for c in children) == [0, 1, 2, 3]
    assert {c.topic_id for c in children} == {"echo"}
    assert parent.result == {"next": [{"topic": "echo", "data": {"i": i}} for i in range(4)]}


def test_sjq_style_dict_chains():
    parent = Job.objects.enqueue("sjq")
    run_worker("sjq")
    child = Job.objects.get(parent=parent)
    assert (child.topic_id, child.payload) == ("echo", {"from": "sjq"})
    parent.refresh_from_db()
    assert parent.result == {"next_topic": "echo", "data": {"from": "sjq"}}


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_chained_jobs_get_fresh_attempts_and_their_own_priority(isolation):
    a = Job.objects.enqueue("chain_prio", priority=50, max_attempts=5)
    b = Job.objects.enqueue("stage1", {"n": 0}, priority=60, max_attempts=5)
    run_worker("chain_prio", "stage1", isolation=isolation)
    child_a = Job.objects.get(parent=a)
    child_b = Job.objects.get(parent=b)
    # Next(priority=7) and echo's max_attempts; stage2's defaults.
    assert (child_a.priority, child_a.attempts, child_a.max_attempts) == (7, 0, 2)
    assert (child_b.priority, child_b.attempts, child_b.max_attempts) == (0, 0, 3)
    assert child_a.status == child_b.status == "queued"
    assert set(engine.queue_ids("echo")) == {str(child_a.pk)}


def test_chaining_is_in_the_success_transaction():
    """A successor that cannot be created undoes the success: no half of it is kept,
    the attempt fails with the reason, and the worker goes on."""
    bad = Job.objects.enqueue("chain_bad", max_attempts=1)
    also_bad = Job.objects.enqueue("chain_bad", max_attempts=1)
    ok = Job.objects.enqueue("stage1", {"n": 0})
    run_worker("chain_bad", "stage1")
    for job in (bad, also_bad):
        job.refresh_from_db()
        assert job.status == "failed"
        assert "no-such-topic" in job.error
        assert not Job.objects.filter(parent=job).exists()  # the echo successor was rolled back too
        execution = job.executions.get()
        assert execution.outcome == "failed" and "UnknownTopic" in execution.traceback
    assert Job.objects.get(pk=ok.pk).status == "succeeded"
    assert not Job.objects.filter(topic_id="echo").exists()


def _claimed(topic: str, payload: dict, lease: float):
    job = Job.objects.enqueue(topic, payload)
    assert engine.pop(topic, 1, lease_seconds=lease) == [str(job.pk)]
    claimed = claim(str(job.pk), "w-test", os.getpid())
    assert claimed is not None
    return claimed


def test_crash_between_success_and_acknowledgement_creates_one_successor():
    job, execution = _claimed("stage1", {"n": 0}, lease=0.2)
    # The success commits, then the worker dies before acknowledging: the lease stays.
    assert finish(job, execution, Outcome(ok=True, result={"n": 1}), defer_ack=True) == "succeeded"
    assert engine.depths("stage1")["leased"] == 1
    time.sleep(0.3)
    assert maintenance.reap(["stage1"]) == 1
    job.refresh_from_db()
    assert job.status == "succeeded"
    assert Job.objects.filter(parent=job).count() == 1
    assert job.executions.count() == 1
    assert engine.depths("stage1") == {"queued": 0, "leased": 0, "scheduled": 0}
    assert maintenance.reap(["stage1"]) == 0


def test_finishing_twice_creates_one_successor():
    job, execution = _claimed("stage2", {"n": 1}, lease=30)
    outcome = Outcome(ok=True, result=Next("stage3", {"n": 2}))
    assert finish(job, execution, outcome) == "succeeded"
    assert finish(job, execution, outcome) == "lost"  # not ours any more: nothing happens
    assert Job.objects.filter(parent=job).count() == 1
    assert job.executions.count() == 1
    assert Job.objects.get(pk=job.pk).status == "succeeded"


def test_next_helpers_round_trip():
    items = [Next("echo", {"i": 1}, priority=3), Next("other")]
    assert next_jobs(items) == items
    assert next_jobs({"next_topic": "echo", "data": 1}) == [Next("echo", 1)]
    assert next_jobs({"next_topic": "echo", "extra": 1}) == []  # a plain result
    assert next_jobs([]) == [] and next_jobs("x") == []
    back = from_wire(to_wire(items))
    assert [(n.topic, n.data, n.options) for n in back] == [
        ("echo", {"i": 1}, {"priority": 3}),
        ("other", None, {}),
    ]
    assert storable_result(items[0]) == {"next": [{"topic": "echo", "data": {"i": 1}}]}


def test_a_chain_read_from_data_is_marked_and_a_plain_result_survives_the_wire():
    assert not next_jobs(Next("echo", 1))[0].from_data
    assert next_jobs({"next_topic": "echo", "data": 1})[0].from_data
    back = from_wire(to_wire([Next("echo", 1), *next_jobs({"next_topic": "other"})]))
    assert [n.from_data for n in back] == [False, True]
    # A result that happens to look like a chain on the wire stays a plain result.
    lookalike = {"__next__": [{"topic": "echo", "data": 1, "options": {}}]}
    assert from_wire(to_wire(lookalike)) == lookalike
