"""Celery-style call sites: ``@shared_task`` functions called, delayed, applied and chained,
run by real jobqueue workers; and what is not supported, refused with the alternative."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from django.db import transaction
from django.utils import timezone

from jobqueue import registry
from jobqueue.contrib.celery import (
    AsyncResult,
    Chain,
    JobFailed,
    JobResult,
    NotSupported,
    chain,
    chord,
    group,
    shared_task,
)
from jobqueue.models import Job, Topic

from .celery_tasks.tasks import add, boom, collect, flaky, mul, pid_and, prioritized
from .workerutil import REPO_ROOT, WorkerPool, child_env, run_worker

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "tests.celery_tasks.tasks.add"
MUL = "tests.celery_tasks.tasks.mul"


#: Run in a fresh process: what a tasks module's import does, then what starting Django does.
IMPORT_THEN_SETUP = """
import sys

from jobqueue import registry
from jobqueue.contrib.celery import shared_task

@shared_task(name="celery-tests.fresh")
def fresh(x):
    return x

assert "kombu" not in sys.modules and "celery" not in sys.modules, "a broker library imported"
assert "jobqueue.models" not in sys.modules, "models imported"
assert registry.get("celery.send") is None, "the sending topic registered before CeleryNext is used"
assert fresh(3) == 3

from jobqueue.contrib.celery import CeleryNext

assert registry.get("celery.send") is not None and "kombu" not in sys.modules

import django

django.setup()
print(fresh.delay(4).job.payload)
"""


@pytest.mark.slow
def test_importing_needs_no_broker_library_and_no_models():
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_THEN_SETUP],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'args': [4], 'kwargs': {}}"


# -- registration and direct calls ---------------------------------------------------


def test_a_shared_task_is_the_handler_of_a_topic_named_like_the_celery_task():
    spec = registry.get(ADD)
    assert spec is not None and spec.name == ADD  # the function's own path, not a wrapper's
    assert add.name == ADD and add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert registry.get("celery-tests.collect") is not None and collect.name == "celery-tests.collect"
    topic = Topic.objects.resolve(ADD)
    assert topic.description == "Add two numbers."


def test_calling_the_task_runs_it_inline_without_a_job():
    assert add(2, 3) == 5
    assert collect(1, x=2) == {"args": [1], "kwargs": {"x": 2}}
    assert flaky(1)["retries"] == 0  # bound: self.request of a direct call
    assert Job.objects.count() == 0


def test_celery_options_become_topic_settings():
    topic = Topic.objects.resolve(prioritized.name)
    assert (topic.default_priority, topic.timeout) == (7, 42)  # priority=, time_limit=; queue= ignored
    assert Topic.objects.resolve(boom.name).max_attempts == 1  # max_retries=0
    assert Topic.objects.resolve(flaky.name).max_attempts == 3


def test_a_name_that_is_not_a_topic_name_is_refused_with_the_fix():
    def Resize():  # noqa: N802 - the point of the test
        pass

    with pytest.raises(ValueError, match=r"name='\.\.\.'"):
        shared_task(Resize)
    task = shared_task(name="celery-tests.resize")(Resize)
    try:
        assert task.name == "celery-tests.resize" and registry.get("celery-tests.resize") is not None
    finally:
        registry.unregister("celery-tests.resize")


@pytest.mark.parametrize(("rate_limit", "rate"), [("10/m", "10/m"), ("100/h", "100/h"), (5, "5/s"), ("2", "2/s"),
                                                   (None, "")])
def test_rate_limit_becomes_the_topics_rate(rate_limit, rate):
    task = shared_task(name="celery-tests.limited", rate_limit=rate_limit)(lambda: None)
    try:
        assert registry.get(task.name).defaults["rate"] == rate
        assert Topic.objects.resolve(task.name).rate == rate
    finally:
        registry.unregister(task.name)


@pytest.mark.parametrize(("rate_limit", "error"), [("ten/m", ValueError), (0.5, ValueError), ("0/m", ValueError),
                                                   ([10], TypeError)])
def test_a_rate_limit_jobqueue_cannot_hold_is_refused(rate_limit, error):
    with pytest.raises(error, match="rate"):
        shared_task(name="celery-tests.limited", rate_limit=rate_limit)(lambda: None)
    assert registry.get("celery-tests.limited") is None


# -- enqueueing ----------------------------------------------------------------------


def test_delay_enqueues_the_call_as_args_and_kwargs_and_get_returns_the_result():
    result = collect.delay(1, [2], key="v")
    assert isinstance(result, JobResult)
    job = Job.objects.get(pk=result.id)
    assert job.topic_id == "celery-tests.collect"
    assert job.payload == {"args": [1, [2]], "kwargs": {"key": "v"}}  # what the inbound bridge writes too
    assert (result.status, result.state, result.ready()) == ("queued", "PENDING", False)
    run_worker("celery-tests.collect")
    assert result.get(timeout=10) == {"args": [1, [2]], "kwargs": {"key": "v"}}
    assert (result.state, result.successful(), result.result["args"]) == ("SUCCESS", True, [1, [2]])


def test_a_job_written_with_the_bridge_payload_runs_the_function():
    job = Job.objects.enqueue(ADD, {"args": [40, 2], "kwargs": {}})
    bad = Job.objects.enqueue(ADD, {"args": "40, 2"}, max_attempts=1)
    run_worker(ADD)
    job.refresh_from_db()
    bad.refresh_from_db()
    assert job.result == 42
    assert bad.status == "failed" and "'args' must be a list" in bad.error


def test_apply_async_maps_countdown_eta_and_priority():
    later = add.apply_async((1, 2), countdown=60, priority=9, queue="elsewhere")
    job = later.job
    assert (job.status, job.priority) == ("scheduled", 9)
    assert timezone.now() + dt.timedelta(seconds=50) < job.run_after <= timezone.now() + dt.timedelta(seconds=60)
    eta = timezone.now() + dt.timedelta(hours=1)
    assert add.apply_async(kwargs={"x": 1, "y": 2}, eta=eta).job.run_after == eta
    now = add.apply_async([3, 4], entity_id="sum-3-4")  # jobqueue's own options pass through
    assert now.job.entity_id == "sum-3-4" and now.job.payload == {"args": [3, 4], "kwargs": {}}
    assert prioritized.delay().job.priority == 7  # the topic's default


def test_delay_is_transaction_safe():
    with transaction.atomic():
        kept = add.delay(1, 1)
        with pytest.raises(NotSupported, match="inside a transaction"):
            kept.get(timeout=1)
    try:
        with transaction.atomic():
            add.delay(2, 2)
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert list(Job.objects.values_list("payload", flat=True)) == [{"args": [1, 1], "kwargs": {}}]


def test_a_failed_job_raises_its_error_from_get():
    result = boom.delay("no such image")
    run_worker(boom.name)
    with pytest.raises(JobFailed, match="ValueError: no such image") as info:
        result.get(timeout=10)
    assert info.value.status == "failed" and info.value.job_id == result.job_id
    assert "no such image" in result.get(propagate=False)
    assert result.failed() and result.state == "FAILURE"
    with pytest.raises(TimeoutError, match="still queued"):
        add.delay(1, 2).get(timeout=0.2)


def test_bind_true_gives_the_request_and_retry_asks_for_another_attempt():
    result = flaky.delay(2)
    run_worker(flaky.name)
    job = result.job
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert job.result == {"id": str(job.pk), "retries": 1}
    first = job.executions.get(attempt=1)
    assert first.error_class == "jobqueue.Retry" and "attempt 1" in first.error

    exhausted = flaky.delay(5)  # max_retries=2: three attempts, then the exception given to retry()
    run_worker(flaky.name)
    job = exhausted.job
    assert (job.status, job.attempts) == ("failed", 3)
    assert "RuntimeError: attempt 3" in job.error


# -- chains --------------------------------------------------------------------------


def test_a_chain_passes_each_result_to_the_next_step():
    workflow = add.s(2, 3) | mul.s(10) | collect.s(extra=True)
    assert isinstance(workflow, Chain) and repr(workflow).startswith(f"{ADD}.s(2, 3) | {MUL}.s(10)")
    result = workflow.delay()
    first = result.job
    assert first.payload["args"] == [2, 3] and [s["topic"] for s in first.payload["chain"]] == [
        MUL,
        "celery-tests.collect",
    ]
    run_worker(ADD, MUL, "celery-tests.collect")
    assert result.get(timeout=10) == {"args": [50], "kwargs": {"extra": True}}
    second = Job.objects.get(parent=first)
    third = Job.objects.get(parent=second)
    assert (second.topic_id, second.payload["args"]) == (MUL, [5, 10])
    assert third.payload == {"args": [50], "kwargs": {"extra": True}}  # the last step carries no chain


def test_immutable_signatures_partial_arguments_and_step_options():
    result = chain(add.si(1, 1), add.si(5, 5).set(priority=4), add.s(100)).apply_async(priority=2)
    first = result.job
    assert first.priority == 2
    run_worker(ADD)
    # .si() ignores the result before it; add.s(100) gets 10 first: add(10, 100).
    assert result.get(timeout=10) == 110
    second = Job.objects.get(parent=first)
    assert (second.payload["args"], second.priority) == ([5, 5], 4)
    assert Job.objects.get(parent=second).payload["args"] == [10, 100]
    assert add.s(1)(2) == 3  # a signature called runs inline, given arguments first

    delayed = (add.s(1, 1) | add.s(1).set(countdown=3600)).delay()
    run_worker(ADD)
    later = Job.objects.get(parent=delayed.job_id)
    assert later.status == "scheduled" and later.run_after > timezone.now() + dt.timedelta(minutes=50)


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_a_chain_through_a_forked_child(isolation):
    result = (pid_and.s("a") | collect.s()).delay()
    run_worker(pid_and.name, "celery-tests.collect", isolation=isolation)
    value = result.get(timeout=10)["args"][0]
    assert value["value"] == "a"
    assert (value["pid"] == os.getpid()) == (isolation == "inline")


@pytest.mark.slow
def test_calls_and_chains_run_on_jobworker_processes(tmp_path):
    pool = WorkerPool(tmp_path)
    try:
        single = add.delay(20, 22)
        applied = mul.apply_async((6, 7), priority=5)
        chained = (add.s(1, 2) | mul.s(3) | add.s(4)).delay()
        pool.start("--topics", ADD, MUL, "celery-tests.collect", name="celery-calls")
        assert single.get(timeout=30) == 42
        assert applied.get(timeout=30) == 42
        assert chained.get(timeout=30) == 13
        assert {j.executions.get().pid for j in (single.job, applied.job)} == {pool.workers[0].pid}
    finally:
        pool.close()


# -- what is not supported -----------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "alternative"),
    [
        (lambda: group(add.s(1, 2), add.s(3, 4)), "enqueue_many"),
        (lambda: chord([add.s(1, 2)], add.s()), "Workflow"),
        (lambda: AsyncResult("some-id"), "JobResult"),
        (lambda: add.AsyncResult("some-id"), "JobResult"),
        (lambda: add.retry(), "bind=True"),
        (lambda: add.apply((1, 2)), "call the task directly"),
        (lambda: add.map([1, 2]), "enqueue_many"),
        (lambda: add.apply_async((1, 2), expires=60), "job.cancel"),
        (lambda: add.apply_async((1, 2), link=mul.s(2)), "chain the next step with |"),
        (lambda: add.apply_async((1, 2), link_error=mul.s(2)), "job_failed"),
        (lambda: add.apply_async((1, 2), task_id="fixed"), "entity_id"),
        (lambda: add.apply_async((1, 2), serializer="pickle"), "JSON"),
        (lambda: add.s(1, 2).link(mul.s(2)), "chain the next step with |"),
        (lambda: (add.s(1, 2) | mul.s(2).set(entity_id="x")).delay(), "later step of a chain"),
        (lambda: shared_task(autoretry_for=(ValueError,))(lambda: None), "max_retries"),
        (lambda: shared_task(max_retries=None)(lambda: None), "give a number"),
        (lambda: shared_task(retry_backoff=True)(lambda: None), "base delay"),
    ],
)
def test_unsupported_features_raise_naming_the_alternative(call, alternative):
    with pytest.raises(NotSupported, match=alternative.replace("|", r"\|").replace(".", r"\.")):
        call()
    assert Job.objects.count() == 0


def test_unknown_options_are_type_errors():
    with pytest.raises(TypeError, match="unexpected option 'colour'"):
        add.apply_async((1, 2), colour="red")
    with pytest.raises(TypeError, match="unexpected option 'colour'"):
        shared_task(colour="red")(lambda: None)
    with pytest.raises(TypeError, match="list or tuple"):
        add.apply_async("12")


def test_retry_outside_a_job_is_refused():
    @shared_task(bind=True, name="celery-tests.retry-inline")
    def retrying(self):
        raise self.retry(countdown=1)

    try:
        with pytest.raises(NotSupported, match="outside a job"):
            retrying()
    finally:
        registry.unregister("celery-tests.retry-inline")
