"""Workflows: jobs that wait for other jobs, built one by one or as a graph, run by a real worker."""

from __future__ import annotations

import pytest

from jobqueue import engine, registry
from jobqueue.exceptions import DependencyCycle, InvalidJob, InvalidTransition, UnknownTopic
from jobqueue.models import Job, JobStatus
from jobqueue.workflow import Workflow, add_dependencies, graph

from .workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def failing_topic():
    def always_fails(job):
        raise RuntimeError("this step always fails")

    registry.register("wf-fails", always_fails, max_attempts=1)
    yield "wf-fails"
    registry.unregister("wf-fails")


def statuses(*jobs: Job) -> list[str]:
    found = dict(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("pk", "status"))
    return [found[j.pk] for j in jobs]


def dep_ids(job: Job) -> set:
    return set(Job.objects.get(pk=job.pk).depends_on.values_list("pk", flat=True))


# -- the builder ----------------------------------------------------------------------


def test_workflow_submits_a_diamond_and_the_worker_runs_it_in_dependency_order():
    wf = Workflow()
    a = wf.add("echo", {"step": "a"})
    b = wf.add("echo", {"step": "b"}, depends_on=[a])
    c = wf.add("echo", {"step": "c"}, depends_on=[a], priority=9)
    d = wf.add("echo", {"step": "d"}, depends_on=[b, c])
    jobs = wf.submit()

    assert [j.payload["step"] for j in jobs] == ["a", "b", "c", "d"]
    assert [s.job for s in (a, b, c, d)] == jobs
    ja, jb, jc, jd = jobs
    assert statuses(*jobs) == ["queued", "waiting", "waiting", "waiting"]
    assert dep_ids(jb) == {ja.pk} and dep_ids(jc) == {ja.pk} and dep_ids(jd) == {jb.pk, jc.pk}
    assert Job.objects.get(pk=jc.pk).priority == 9
    # Only the root is in Redis; the others wait in the database.
    assert engine.queue_ids("echo") == [str(ja.pk)]

    run_worker("echo")

    rows = {j.pk: j for j in Job.objects.filter(pk__in=[j.pk for j in jobs])}
    assert all(r.status == JobStatus.SUCCEEDED for r in rows.values())
    assert rows[ja.pk].finished_at <= rows[jb.pk].started_at
    assert rows[ja.pk].finished_at <= rows[jc.pk].started_at
    assert max(rows[jb.pk].finished_at, rows[jc.pk].finished_at) <= rows[jd.pk].started_at
    assert rows[jd.pk].result == {"step": "d"}


def test_workflow_is_all_or_nothing():
    wf = Workflow()
    a = wf.add("echo", {"n": 1})
    wf.add("echo", {"n": 2}, depends_on=[a])
    wf.add("no-such-topic", {}, depends_on=[a])
    with pytest.raises(UnknownTopic):
        wf.submit()
    assert Job.objects.count() == 0
    assert engine.queue_ids("echo") == []
    assert a.job is None or not Job.objects.filter(pk=a.job.pk).exists()


def test_workflow_refuses_cycles_when_they_are_made():
    wf = Workflow()
    a = wf.add("echo")
    b = wf.add("echo", depends_on=[a])
    c = wf.add("echo", depends_on=[b])
    with pytest.raises(DependencyCycle, match="echo -> echo -> echo -> echo"):
        wf.depend(a, on=[c])
    with pytest.raises(DependencyCycle):
        wf.depend(b, on=[b])
    # The refused edges were not kept: the graph still submits.
    assert a.depends_on == [] and b.depends_on == [a]
    jobs = wf.submit()
    assert statuses(*jobs) == ["queued", "waiting", "waiting"]


def test_workflow_refuses_foreign_steps_and_a_second_submit():
    wf, other = Workflow(), Workflow()
    stranger = other.add("echo")
    with pytest.raises(InvalidJob, match="not a step of this workflow"):
        wf.add("echo", depends_on=[stranger])
    wf.add("echo")
    wf.submit()
    with pytest.raises(InvalidTransition):
        wf.submit()
    with pytest.raises(InvalidTransition):
        wf.add("echo")


def test_workflow_steps_can_wait_for_existing_jobs():
    done = Job.objects.enqueue("echo", {"first": True})
    run_worker("echo")
    pending = Job.objects.enqueue("echo", {"second": True})
    wf = Workflow()
    after_done = wf.add("echo", {"x": 1}, depends_on=[done])
    after_both = wf.add("echo", {"x": 2}, depends_on=[str(done.pk), pending, after_done])
    wf.submit()
    assert statuses(after_done.job, after_both.job) == ["queued", "waiting"]
    dead = Job.objects.enqueue("echo")
    dead.cancel()
    wf = Workflow()
    wf.add("echo", depends_on=[dead])
    with pytest.raises(InvalidJob, match="failed or was cancelled"):
        wf.submit()


# -- release and cancellation through a real worker -------------------------------------


def test_failed_dependency_cancels_dependents_transitively_with_the_reason(failing_topic):
    wf = Workflow()
    a = wf.add(failing_topic, {})
    b = wf.add("echo", {"b": 1}, depends_on=[a])
    c = wf.add("echo", {"c": 1}, depends_on=[b])
    unrelated = wf.add("echo", {"u": 1})
    wf.submit()

    run_worker(failing_topic, "echo")

    ja, jb, jc, ju = (Job.objects.get(pk=s.job.pk) for s in (a, b, c, unrelated))
    assert (ja.status, jb.status, jc.status, ju.status) == ("failed", "cancelled", "cancelled", "succeeded")
    assert jb.error == f"Cancelled: dependency {ja.pk} ({failing_topic}) failed"
    assert jc.error == f"Cancelled: dependency {jb.pk} (echo) cancelled"
    assert jb.started_at is None and jc.started_at is None  # never ran
    assert not jb.executions.exists()


def test_cancelling_a_dependency_cancels_its_dependents():
    a = Job.objects.enqueue("echo", {"a": 1})
    b = Job.objects.enqueue("echo", {"b": 1}, depends_on=[a])
    c = Job.objects.enqueue("echo", {"c": 1}, depends_on=[b])
    a.cancel("not needed")
    assert statuses(a, b, c) == ["cancelled", "cancelled", "cancelled"]
    assert Job.objects.get(pk=c.pk).error == f"Cancelled: dependency {b.pk} (echo) cancelled"
    run_worker("echo")
    assert statuses(a, b, c) == ["cancelled", "cancelled", "cancelled"]


def test_dependent_waits_through_a_retry_of_its_dependency():
    a = Job.objects.enqueue("flaky", {"succeed_on": 2})
    b = Job.objects.enqueue("echo", {"b": 1}, depends_on=[a])
    run_worker("flaky", "echo")
    a.refresh_from_db()
    assert (a.status, a.attempts) == ("succeeded", 2)
    assert statuses(b) == ["succeeded"]


def test_fan_in_waits_for_every_dependency():
    parts = [Job.objects.enqueue("echo", {"part": i}) for i in range(5)]
    total = Job.objects.enqueue("echo", {"total": True}, depends_on=parts)
    assert statuses(total) == ["waiting"]
    run_worker("echo", max_jobs=3)
    assert sorted(statuses(*parts)).count("succeeded") == 3
    assert statuses(total) == ["waiting"]
    run_worker("echo")
    assert statuses(*parts, total) == ["succeeded"] * 6


def test_fan_out_by_next_list_and_graph_shows_parent_and_children():
    root = Job.objects.enqueue("fanout", {"count": 4})
    run_worker("fanout", "echo")
    root.refresh_from_db()
    info = graph(root)
    assert len(info["children"]) == 4 and info["counts"]["children"] == 4
    assert {n.topic for n in info["children"]} == {"echo"}
    assert {n.status for n in info["children"]} == {"succeeded"}
    child = Job.objects.get(pk=info["children"][0].id)
    assert graph(child)["parent"] == [(root.pk, "fanout", "succeeded")]
    assert graph(child, limit=1)["counts"]["parent"] == 1


def test_graph_lists_dependencies_and_dependents():
    a = Job.objects.enqueue("echo")
    b = Job.objects.enqueue("other")
    c = Job.objects.enqueue("echo", depends_on=[a, b])
    d = Job.objects.enqueue("echo", depends_on=[c])
    info = graph(c)
    assert info["parent"] == [] and info["children"] == []
    assert set(info["depends_on"]) == {(a.pk, "echo", "queued"), (b.pk, "other", "queued")}
    assert info["dependents"] == [(d.pk, "echo", "waiting")]
    limited = graph(c, limit=1)
    assert len(limited["depends_on"]) == 1 and limited["counts"]["depends_on"] == 2


def test_dependent_with_a_delay_is_scheduled_when_released():
    a = Job.objects.enqueue("echo")
    b = Job.objects.enqueue("echo", depends_on=[a], delay=3600)
    assert statuses(b) == ["waiting"]
    run_worker("echo")
    b.refresh_from_db()
    assert b.status == "scheduled" and b.run_after is not None


# -- dependencies added to existing jobs ------------------------------------------------


def test_add_dependencies_moves_a_queued_job_back_to_waiting():
    first = Job.objects.enqueue("other")
    second = Job.objects.enqueue("echo")
    assert str(second.pk) in engine.queue_ids("echo")
    add_dependencies(second, [first, first])
    assert statuses(second) == ["waiting"]
    assert engine.queue_ids("echo") == []
    assert dep_ids(second) == {first.pk}
    assert Job.objects.get(pk=first.pk).has_dependents
    run_worker("echo", "other")
    assert statuses(first, second) == ["succeeded", "succeeded"]


def test_add_dependencies_refuses_cycles_and_finished_jobs():
    a = Job.objects.enqueue("echo")
    b = Job.objects.enqueue("echo", depends_on=[a])
    c = Job.objects.enqueue("echo", depends_on=[b])
    with pytest.raises(DependencyCycle):
        add_dependencies(a, [c])
    with pytest.raises(DependencyCycle):
        add_dependencies(a, [a])
    assert dep_ids(a) == set() and statuses(a) == ["queued"]
    run_worker("echo")
    late = Job.objects.enqueue("echo")
    with pytest.raises(InvalidTransition, match="only a pending job"):
        add_dependencies(Job.objects.get(pk=a.pk), [late])


def test_add_dependencies_on_finished_dependencies_keeps_the_job_queued():
    done = Job.objects.enqueue("other")
    run_worker("other")
    job = Job.objects.enqueue("echo")
    add_dependencies(job, [done])
    assert statuses(job) == ["queued"]
    assert engine.queue_ids("echo") == [str(job.pk)]
