"""The django.tasks backend: ``@task`` functions enqueue as jobs and run on jobqueue workers.

Run on Django 6.x (``django.tasks``) and on 5.2 with the ``django-tasks`` backport.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from jobqueue import engine, registry
from jobqueue.contrib.tasks import JobQueueBackend, JobQueueTask, run_task_job
from jobqueue.contrib.tasks.compat import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultMismatch,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from jobqueue.exceptions import DuplicateJob, InvalidPayload
from jobqueue.models import Execution, Job, Topic
from jobqueue.worker import Worker
from tests.tasks_app import tasks
from tests.workerutil import WorkerPool, nested, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run_worker(*topics: str, **kwargs) -> Worker:
    worker = Worker(topics=list(topics or ["tasks.default"]), burst=True, install_signals=False, **kwargs)
    assert worker.run() == 0
    return worker


# -- enqueueing ---------------------------------------------------------------------------


def test_backend_declares_every_feature():
    backend = task_backends["default"]
    assert isinstance(backend, JobQueueBackend)
    assert backend.supports_defer and backend.supports_priority
    assert backend.supports_get_result and backend.supports_async_task
    assert isinstance(tasks.add, JobQueueTask)


def test_enqueue_creates_a_job_on_the_queue_topic():
    result = tasks.add.enqueue(2, b=3)
    assert result.status == TaskResultStatus.READY
    assert not result.is_finished
    assert result.args == [2] and result.kwargs == {"b": 3}
    assert result.backend == "default"
    assert result.enqueued_at is not None
    assert result.started_at is result.finished_at is result.last_attempted_at is None
    assert result.errors == [] and result.worker_ids == []
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018 - not finished yet

    job = Job.objects.get(pk=result.id)
    assert job.topic_id == "tasks.default"
    assert job.status == "queued"
    assert job.payload == {
        "task": "tests.tasks_app.tasks.add", "args": [2], "kwargs": {"b": 3}, "backend": "default"
    }
    assert job.max_attempts == 1  # django.tasks runs a task once unless asked otherwise
    assert Topic.objects.get(name="tasks.default").retry_backoff == 0.05  # from the backend's OPTIONS


def test_queue_name_selects_the_topic():
    result = tasks.send_mail.enqueue("a@example.com")
    assert Job.objects.get(pk=result.id).topic_id == "tasks.emails"
    assert result.task.queue_name == "emails"


def test_queues_are_registered_topics_run_by_the_task_runner():
    assert registry.get("tasks.default").func is run_task_job
    assert registry.get("tasks.emails").func is run_task_job
    assert {"tasks.default", "tasks.emails"} <= set(registry.topics())


def test_priority_orders_the_queue():
    low = tasks.add.using(priority=-5).enqueue(1, 1)
    high = tasks.add.using(priority=50).enqueue(2, 2)
    middle = tasks.add.enqueue(3, 3)
    assert Job.objects.get(pk=high.id).priority == 50
    assert high.task.priority == 50
    positions = [Job.objects.get(pk=r.id).position_in_queue for r in (high, middle, low)]
    assert positions == [0, 1, 2]


def test_run_after_defers_the_job():
    when = timezone.now() + dt.timedelta(hours=1)
    result = tasks.add.using(run_after=when).enqueue(1, 2)
    job = Job.objects.get(pk=result.id)
    assert job.status == "scheduled" and job.run_after == when
    assert result.status == TaskResultStatus.READY
    refreshed = default_task_backend.get_result(result.id)
    assert refreshed.task.run_after == when
    run_worker()  # not due: the burst worker leaves it alone
    assert Job.objects.get(pk=result.id).status == "scheduled"


def test_run_after_with_a_far_offset_is_stored_in_utc():
    when = dt.datetime(2031, 7, 8, 15, 28, 1, tzinfo=dt.timezone(dt.timedelta(hours=21, minutes=19)))
    result = tasks.add.using(run_after=when).enqueue(1, 2)
    assert Job.objects.get(pk=result.id).run_after == when


def test_task_options_become_job_options():
    result = tasks.flaky.enqueue(1)
    assert Job.objects.get(pk=result.id).max_attempts == 3  # @task(max_attempts=3)
    result = tasks.slow.enqueue(0)
    assert Job.objects.get(pk=result.id).timeout == 1  # @task(timeout=1)
    result = tasks.add.using(max_attempts=4, timeout=9).enqueue(1, 1)
    job = Job.objects.get(pk=result.id)
    assert (job.max_attempts, job.timeout) == (4, 9)


def test_entity_id_dedupes_pending_tasks():
    first = tasks.add.using(entity_id="sum-1").enqueue(1, 1)
    second = tasks.add.using(entity_id="sum-1", priority=20).enqueue(5, 5)
    assert second.id == first.id
    assert second.args == [1, 1]  # the pending task's own arguments
    job = Job.objects.get(pk=first.id)
    assert job.priority == 20  # raised by the higher-priority duplicate
    assert Job.objects.filter(entity_id="sum-1").count() == 1
    Job.objects.filter(pk=first.id).update(status="running")
    with pytest.raises(DuplicateJob):
        tasks.add.using(entity_id="sum-1").enqueue(2, 2)


def test_enqueue_inside_a_rolled_back_transaction_leaves_nothing():
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(1, 1)
        raise RuntimeError("rollback")
    assert not Job.objects.exists()


def test_aenqueue_and_aget_result():
    result = async_to_sync(tasks.add.aenqueue)(4, 5)
    assert Job.objects.filter(pk=result.id).exists()
    run_worker()
    fetched = async_to_sync(tasks.add.aget_result)(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL and fetched.return_value == 9
    async_to_sync(result.arefresh)()
    assert result.return_value == 9


# -- validation (the behaviour Django documents for a backend) -----------------------------


def test_function_not_at_module_level_is_refused():
    def local(): ...

    with pytest.raises(InvalidTask, match="module level"):
        task(local)


@pytest.mark.parametrize("priority", [101, -101, 1.5])
def test_bad_priority_is_refused(priority):
    with pytest.raises(InvalidTask, match="priority"):
        tasks.add.using(priority=priority)


def test_naive_run_after_is_refused():
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=dt.datetime(2030, 1, 1))


def test_unknown_queue_is_refused():
    with pytest.raises(InvalidTask, match="nope"):
        tasks.add.using(queue_name="nope")


def test_takes_context_needs_a_context_argument():
    with pytest.raises(InvalidTask, match="context"):
        task(takes_context=True)(tasks.plain_function)


@pytest.mark.parametrize(
    "options", [{"max_attempts": 0}, {"timeout": -1}, {"entity_id": "bad\nid"}, {"max_attempts": 2**31}]
)
def test_bad_jobqueue_options_are_refused(options):
    with pytest.raises(InvalidTask):
        tasks.add.using(**options)


@pytest.mark.parametrize("argument", [object(), float("nan"), b"\xff", {"nested": [{1, 2}]}])
def test_arguments_that_are_not_json_raise_a_type_error_as_django_backends_do(argument):
    with pytest.raises(TypeError, match="JSON") as raised:
        tasks.echo.enqueue(argument)
    assert isinstance(raised.value, InvalidPayload)  # and so a ValueError, for jobqueue's own callers
    with pytest.raises(TypeError):
        tasks.echo.enqueue(x=argument)
    assert not Job.objects.exists()


@pytest.mark.parametrize("levels", [100, 10_000])
def test_arguments_nested_too_deeply_are_refused(levels):
    with pytest.raises(InvalidPayload, match="nested"):
        tasks.echo.enqueue(nested(levels))
    assert not Job.objects.exists()


def test_unknown_result_ids():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-uuid")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("00000000-0000-0000-0000-000000000000")
    plain = Job.objects.enqueue("echo", {"task": "tests.tasks_app.tasks.add"})  # not a task job
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(plain.pk))


def test_get_result_through_another_task_is_a_mismatch():
    result = tasks.add.enqueue(1, 2)
    assert tasks.add.get_result(result.id).id == result.id
    with pytest.raises(TaskResultMismatch):
        tasks.echo.get_result(result.id)


# -- running -------------------------------------------------------------------------------


def test_success_fills_every_result_field():
    result = tasks.add.enqueue(2, 3)
    worker = run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.is_finished
    assert result.return_value == 5
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert result.worker_ids == [worker.worker_id] and result.attempts == 1
    assert result.errors == []
    job = Job.objects.get(pk=result.id)
    assert job.status == "succeeded" and job.result == {"return_value": 5}


def test_failure_records_the_exception_class_and_traceback():
    result = tasks.fail.enqueue("it broke")
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018
    [error] = result.errors
    assert error.exception_class_path == "tests.tasks_app.tasks.CustomError"
    assert error.exception_class is tasks.CustomError
    assert "it broke" in error.traceback and "Traceback" in error.traceback
    assert result.finished_at is not None


def test_builtin_exception_class_path():
    result = tasks.fail_builtin.enqueue()
    run_worker()
    [error] = default_task_backend.get_result(result.id).errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_errors_report_the_class_the_worker_stored(isolation):
    # The message looks like another exception's line of a traceback: the class is not read from the text.
    result = tasks.fail.enqueue("boom\nKeyError: not this one")
    run_worker(isolation=isolation)
    assert Execution.objects.get(job_id=result.id).error_class == "tests.tasks_app.tasks.CustomError"
    [error] = default_task_backend.get_result(result.id).errors
    assert error.exception_class_path == "tests.tasks_app.tasks.CustomError"
    assert error.exception_class is tasks.CustomError
    assert "KeyError: not this one" in error.traceback


def test_an_attempt_stored_without_its_class_reports_a_plain_exception():
    # As a row written before Execution.error_class existed: its traceback is not parsed.
    result = tasks.fail_builtin.enqueue()
    run_worker()
    Execution.objects.filter(job_id=result.id).update(error_class="")
    [error] = default_task_backend.get_result(result.id).errors
    assert error.exception_class_path == "builtins.Exception"
    assert "ValueError: bad value" in error.traceback


def test_the_classes_an_outcome_implies_are_the_worker_and_backend_classes():
    from django.utils.module_loading import import_string

    from jobqueue.contrib.tasks import TaskCancelled, TaskLost
    from jobqueue.contrib.tasks.results import OUTCOME_ERROR_CLASSES
    from jobqueue.worker.runner import JobTimeout, WorkerInterrupted

    classes = {outcome: import_string(path) for outcome, path in OUTCOME_ERROR_CLASSES.items()}
    assert classes == {"timeout": JobTimeout, "aborted": WorkerInterrupted, "lost": TaskLost,
                       "cancelled": TaskCancelled}


def test_retries_with_backoff_and_attempt_in_context():
    result = tasks.flaky.enqueue(3)
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3  # context.attempt on the attempt that succeeded
    assert result.attempts == 3 and len(result.worker_ids) == 3
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2
    assert "attempt 1 failed" in result.errors[0].traceback
    assert result.started_at < result.last_attempted_at  # first attempt vs the last


def test_retries_exhausted_fail_the_task():
    result = tasks.flaky.using(max_attempts=2).enqueue(5)
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == 2 and result.attempts == 2


def test_context_carries_the_result_id():
    result = tasks.with_context.enqueue(x=7)
    run_worker()
    assert tasks.with_context.get_result(result.id).return_value == {"attempt": 1, "id": result.id, "x": 7}


def test_async_task_is_awaited():
    result = tasks.async_add.enqueue(20, 22)
    run_worker()
    assert default_task_backend.get_result(result.id).return_value == 42


def test_timeout_fails_the_task():
    result = tasks.slow.enqueue(5)
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class_path == "jobqueue.worker.runner.JobTimeout"
    assert Execution.objects.get(job_id=result.id).outcome == "timeout"


def test_non_json_return_value_fails_the_task():
    result = tasks.returns_object.enqueue()
    run_worker()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert "not JSON" in result.errors[0].traceback


def test_return_value_is_never_a_chaining_instruction():
    result = tasks.returns_next_topic.enqueue()
    run_worker()
    assert default_task_backend.get_result(result.id).return_value == {"next_topic": "echo", "data": {"x": 1}}
    assert not Job.objects.filter(topic_id="echo").exists()


def test_process_isolation_runs_tasks_too():
    result = tasks.add.enqueue(40, 2)
    run_worker(isolation="process")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42


def test_cancelled_task_is_failed_with_a_cancelled_error():
    result = tasks.add.enqueue(1, 1)
    Job.objects.get(pk=result.id).cancel()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "jobqueue.contrib.tasks.exceptions.TaskCancelled"


# -- attempts: worker_ids and errors ---------------------------------------------------------


def test_a_retried_failure_then_a_success_on_another_worker():
    result = tasks.flaky.enqueue(2)
    run_worker(worker_id="worker-A", max_jobs=1)
    Job.objects.get(pk=result.id).run_now()  # the retry is due now, not after its backoff
    run_worker(worker_id="worker-B")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert result.worker_ids == ["worker-A", "worker-B"] and result.attempts == 2
    [error] = result.errors
    assert error.exception_class_path == "builtins.RuntimeError" and "attempt 1 failed" in error.traceback


def test_attempts_before_a_requeue_are_kept():
    result = tasks.flaky.using(max_attempts=1).enqueue(2)
    run_worker(worker_id="worker-A")
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.worker_ids == ["worker-A"]

    Job.objects.get(pk=result.id).requeue()  # a fresh max_attempts; the first run still happened
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert result.worker_ids == ["worker-A"] and len(result.errors) == 1

    run_worker(worker_id="worker-B")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2  # context.attempt counts the run before the requeue
    assert result.worker_ids == ["worker-A", "worker-B"] and result.attempts == 2
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"]


def test_a_requeued_task_cancelled_before_it_runs_again_ends_with_a_cancelled_error():
    result = tasks.fail.enqueue("first run")
    run_worker(worker_id="worker-A")
    job = Job.objects.get(pk=result.id)
    job.requeue()
    job.cancel()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.worker_ids == ["worker-A"]
    paths = [e.exception_class_path for e in result.errors]
    assert paths == ["tests.tasks_app.tasks.CustomError", "jobqueue.contrib.tasks.exceptions.TaskCancelled"]


def test_a_claim_put_back_before_the_task_ran_is_no_attempt():
    from jobqueue.worker.lifecycle import claim, unclaim

    result = tasks.add.enqueue(1, 2)
    assert engine.pop("tasks.default") == [result.id]
    job, _ = claim(result.id, "worker-A", 1)
    assert default_task_backend.get_result(result.id).worker_ids == ["worker-A"]  # running now
    assert unclaim(job)
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert result.worker_ids == [] and result.errors == []
    run_worker(worker_id="worker-B")
    result.refresh()
    assert result.worker_ids == ["worker-B"] and result.return_value == 3


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_an_attempt_a_stopping_worker_aborted_is_listed_and_counted(tmp_path, isolation):
    result = tasks.naps_on_first_attempt.enqueue(60)
    pool = WorkerPool(tmp_path)
    try:
        worker = pool.start("--topics", "tasks.default", "--worker-id", "worker-A", "--isolation", isolation)
        wait_for(lambda: Job.objects.filter(pk=result.id, status="running").exists(), 30, "the task to start")
        worker.signal(signal.SIGTERM)
        worker.wait_for_log("finishing the current job")
        worker.signal(signal.SIGTERM)  # the second signal aborts the task
        worker.wait()
    finally:
        pool.close()
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert result.worker_ids == ["worker-A"] and result.attempts == 1
    assert [e.exception_class_path for e in result.errors] == ["jobqueue.worker.runner.WorkerInterrupted"]

    run_worker(worker_id="worker-B")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2  # the aborted run was attempt 1
    assert result.worker_ids == ["worker-A", "worker-B"] and result.attempts == 2
    assert [e.exception_class_path for e in result.errors] == ["jobqueue.worker.runner.WorkerInterrupted"]


# -- signals --------------------------------------------------------------------------------


@pytest.fixture
def task_signals():
    seen: list[tuple[str, str, str]] = []

    def recorder(name):
        def receive(sender, task_result, **kwargs):
            assert sender is JobQueueBackend
            # The status a receiver reads back from the store matches the one it was given.
            stored = default_task_backend.get_result(task_result.id).status if name != "enqueued" else None
            seen.append((name, task_result.status, stored or task_result.status))

        return receive

    receivers = {sig: recorder(name) for sig, name in
                 ((task_enqueued, "enqueued"), (task_started, "started"), (task_finished, "finished"))}
    for sig, receiver in receivers.items():
        sig.connect(receiver)
    yield seen
    for sig, receiver in receivers.items():
        sig.disconnect(receiver)


def test_signals_for_a_successful_task(task_signals):
    tasks.add.enqueue(1, 2)
    run_worker()
    assert task_signals == [
        ("enqueued", TaskResultStatus.READY, TaskResultStatus.READY),
        ("started", TaskResultStatus.RUNNING, TaskResultStatus.RUNNING),
        ("finished", TaskResultStatus.SUCCESSFUL, TaskResultStatus.SUCCESSFUL),
    ]


def test_signals_for_a_failing_task_after_retries(task_signals):
    tasks.flaky.using(max_attempts=2).enqueue(9)
    run_worker()
    names = [(name, status) for name, status, _ in task_signals]
    assert names == [
        ("enqueued", TaskResultStatus.READY),
        ("started", TaskResultStatus.RUNNING),
        ("started", TaskResultStatus.RUNNING),
        ("finished", TaskResultStatus.FAILED),
    ]
    assert task_signals[-1][2] == TaskResultStatus.FAILED


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_the_log_line_of_a_failed_task_carries_its_exception(caplog, isolation):
    result = tasks.fail.enqueue("it broke")
    run_worker(isolation=isolation)
    [record] = [r for r in caplog.records if r.name in ("django.tasks", "django_tasks") and "FAILED" in r.getMessage()]
    assert record.levelno == logging.ERROR and result.id in record.getMessage()
    assert record.exc_info and record.exc_info[0] is not None
    logged = logging.Formatter().format(record)
    assert "tests.tasks_app.tasks.CustomError: it broke" in logged
    assert "raise CustomError(message)" in logged  # the task's own traceback


def test_no_task_signals_for_plain_jobs(task_signals):
    Job.objects.enqueue("echo", {"x": 1})
    run_worker("echo")
    assert task_signals == []


def test_a_failing_signal_receiver_does_not_stop_the_worker():
    def broken(sender, task_result, **kwargs):
        raise RuntimeError("receiver bug")

    task_started.connect(broken)
    task_finished.connect(broken)
    try:
        result = tasks.add.enqueue(1, 1)
        run_worker()
    finally:
        task_started.disconnect(broken)
        task_finished.disconnect(broken)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
