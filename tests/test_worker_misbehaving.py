"""Handlers that misbehave, run by a worker in this process: producing text a database
cannot store as it is. Every attempt is recorded and a success stays a success (see
``tests/testapp/jobs.py``)."""

from __future__ import annotations

import json
import os

import pytest

from jobqueue.models import Job

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
