"""Handlers that misbehave, run by a worker in this process: leaving with a
``BaseException`` (``sys.exit()``, ``KeyboardInterrupt``...), producing text a database
cannot store as it is, and going on past their timeout. Every attempt is recorded, a
success stays a success, and the worker goes on (but after abandoning a handler that
would not stop; see ``tests/testapp/jobs.py``)."""

from __future__ import annotations

import json
import os
import threading

import pytest
from django.db import connections

from jobqueue import engine
from jobqueue.models import Job
from jobqueue.worker import Worker

from .workerutil import jobqueue_settings, run_worker

pytestmark = pytest.mark.django_db(transaction=True)

#: ``before<odd character>after`` as it is recorded.
REPLACED = "before\ufffdafter"


def run_unstorable(where: str, odd: str = "nul", isolation: str = "inline") -> Job:
    """Run a job of the ``unstorable`` topic (see its handler); returns it as recorded."""
    job = Job.objects.enqueue("unstorable", {"where": where, "odd": odd})
    run_worker("unstorable", isolation=isolation)
    job.refresh_from_db()
    return job


# -- BaseExceptions -------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["inline", "process"])
@pytest.mark.parametrize("how, error, exit_code", [
    ("sys.exit", "SystemExit: 3", 3),
    ("KeyboardInterrupt", "KeyboardInterrupt", 1),
    ("GeneratorExit", "GeneratorExit", 1),
])
def test_base_exception_from_a_handler_is_a_failed_attempt(isolation, how, error, exit_code):
    job = Job.objects.enqueue("exits", {"how": how, "code": 3})
    later = Job.objects.enqueue("echo", {"after": how})
    worker = run_worker("exits", "echo", isolation=isolation)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.result) == ("succeeded", 2, {"attempt": 2})
    first = job.executions.get(attempt=1)
    assert (first.outcome, first.error) == ("retry", error)
    assert first.traceback.startswith("Traceback") and first.traceback.rstrip().endswith(error)
    assert first.exit_code == (exit_code if isolation == "process" else None)
    # The worker went on with the next job.
    assert Job.objects.get(pk=later.pk).status == "succeeded"
    assert worker.processed == 3


@pytest.mark.parametrize("how, exit_code, error", [
    ("os._exit", 7, "The child process exited with code 7 without sending a result"),
    ("SIGKILL", -9, "The child process was killed by signal 9 (SIGKILL) before sending a result"),
])
def test_child_leaving_without_a_result_is_recorded_with_its_exit_code(how, exit_code, error):
    job = Job.objects.enqueue("exits", {"how": how, "code": 7, "say": "last words"})
    run_worker("exits", isolation="process")
    job.refresh_from_db()
    assert (job.status, job.result) == ("succeeded", {"attempt": 2})
    first = job.executions.get(attempt=1)
    assert (first.outcome, first.exit_code) == ("retry", exit_code)
    assert first.error == f"{error}; its last output: last words"
    assert first.stdout == "last words\n"


def test_real_sigint_to_a_worker_without_signal_handlers_aborts_the_job_and_stops():
    """``install_signals=False`` leaves SIGINT to Python: a real one still stops the worker
    (the attempt aborted, the job queued again), unlike a handler raising KeyboardInterrupt."""
    job = Job.objects.enqueue("exits", {"how": "SIGINT"})
    worker = run_worker("exits", max_jobs=3)
    assert worker.processed == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 0)
    assert job.executions.get().outcome == "aborted"
    assert engine.queue_ids("exits") == [str(job.pk)]


# -- text a database cannot store -----------------------------------------------------


@pytest.mark.parametrize("isolation", ["inline", "process"])
@pytest.mark.parametrize("odd", ["nul", "surrogate"])
def test_error_a_database_cannot_store_is_recorded_sanitised(isolation, odd):
    job = run_unstorable("error", odd, isolation)
    assert (job.status, job.error) == ("failed", f"ValueError: {REPLACED}")
    execution = job.executions.get()
    assert (execution.outcome, execution.error) == ("failed", job.error)
    assert execution.traceback.rstrip().endswith(f"ValueError: {REPLACED}")
    if isolation == "process":
        assert "ValueError: before" in execution.stderr


@pytest.mark.parametrize("isolation", ["inline", "process"])
@pytest.mark.parametrize("odd", ["nul", "surrogate"])
def test_progress_a_database_cannot_store_is_recorded_sanitised(isolation, odd):
    job = run_unstorable("progress", odd, isolation)
    assert (job.status, job.result) == ("succeeded", "done")
    assert (job.progress_message, job.stage) == (REPLACED, REPLACED)


@pytest.mark.parametrize("isolation", ["inline", "process"])
@pytest.mark.parametrize("odd", ["nul", "surrogate"])
def test_result_a_database_cannot_store_is_recorded_sanitised(isolation, odd, tmp_path):
    with jobqueue_settings(DATA_DIR=str(tmp_path)):
        job = run_unstorable("result", odd, isolation)
    assert job.status == "succeeded"
    assert job.result == {"text": REPLACED, REPLACED: [REPLACED]}
    assert job.executions.get().outcome == "succeeded"
    with open(os.path.join(tmp_path, str(job.pk), "output.json"), encoding="utf-8") as fh:
        assert json.load(fh) == job.result


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_captured_output_with_nul_is_recorded_sanitised_and_the_success_stands(stream):
    job = run_unstorable(stream, isolation="process")
    assert (job.status, job.result) == ("succeeded", "done")
    execution = job.executions.get()
    assert execution.outcome == "succeeded"
    assert getattr(execution, stream) == f"{REPLACED}\n"


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_exception_whose_str_fails_is_recorded_by_its_class(isolation):
    job = run_unstorable("unprintable", isolation=isolation)
    assert (job.status, job.error) == ("failed", "Unprintable: <unprintable Unprintable>")
    execution = job.executions.get()
    assert execution.error == job.error
    assert "raise Unprintable()" in execution.traceback


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_result_too_deep_to_encode_fails_the_attempt_with_the_reason(isolation):
    job = Job.objects.enqueue("deep")
    run_worker("deep", isolation=isolation)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == "Handler returned a result that is not JSON: it nests too deeply"
    assert job.executions.get().error == job.error


# -- inline timeouts ------------------------------------------------------------------


def test_handler_returning_after_its_timeout_is_timed_out_whatever_it_returned():
    job = Job.objects.enqueue("overrun", {"seconds": 1.5})
    later = Job.objects.enqueue("echo", {"after": "overrun"})
    worker = run_worker("overrun", "echo")
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == ("succeeded", "on time", 2)
    first = job.executions.get(attempt=1)
    assert first.outcome == "timeout"
    assert first.error.startswith("Timed out after 1s: the handler caught its JobTimeout")
    assert Job.objects.get(pk=later.pk).status == "succeeded"
    assert worker.processed == 3


def test_handler_ignoring_its_timeout_is_abandoned_and_the_worker_stops():
    job = Job.objects.enqueue("overrun", {"until_recorded": True, "seconds": 20}, max_attempts=1)
    worker = Worker(topics=["overrun"], burst=True, install_signals=False)
    assert worker.run() == 1
    job.refresh_from_db()
    assert (job.status, job.result) == ("failed", None)
    execution = job.executions.get()
    assert execution.outcome == "timeout"
    assert "abandoned" in execution.error and execution.error == job.error
    assert engine.TopicLock.holders("overrun") == []
    assert engine.depths("overrun") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_worker_in_a_thread_abandons_a_handler_but_leaves_the_process_alone():
    """A worker that could not install its signal handlers (not in the main thread) does
    not own its process: after abandoning a handler it stops, it does not exit."""
    job = Job.objects.enqueue("overrun", {"seconds": 8}, max_attempts=1)
    worker = Worker(topics=["overrun"], burst=True)
    codes = []

    def run() -> None:
        try:
            codes.append(worker.run())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert codes == [1]
    job.refresh_from_db()
    assert (job.status, job.result) == ("failed", None)
    assert job.executions.get().outcome == "timeout" and "abandoned" in job.error
