"""An attempt's Execution row names the class of the exception that ended it, whether the
handler ran in the worker or in a forked child."""

from __future__ import annotations

import pytest

from jobqueue import constants, registry
from jobqueue.models import Execution, Job
from tests.workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)

ISOLATIONS = ["inline", "process"]


def attempts(job: Job) -> list[tuple[str, str]]:
    return list(Execution.objects.filter(job=job).order_by("attempt").values_list("outcome", "error_class"))


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_builtin_exception_is_stored_by_its_dotted_path(isolation):
    job = Job.objects.enqueue("loud", {"fail": True}, max_attempts=1)
    run_worker("loud", isolation=isolation)
    assert attempts(job) == [("failed", "builtins.ValueError")]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_project_exception_is_stored_by_its_module_and_name(isolation):
    job = Job.objects.enqueue("unstorable", {"where": "unprintable"})  # its str() fails too
    run_worker("unstorable", isolation=isolation)
    assert attempts(job) == [("failed", "tests.testapp.jobs.Unprintable")]


def test_a_retry_request_and_then_a_success():
    job = Job.objects.enqueue("retry", {})
    run_worker("retry")  # a burst worker waits for the retry's 0.1 s delay
    assert attempts(job) == [("retry", "jobqueue.Retry"), ("succeeded", "")]


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_timeout_is_stored_as_job_timeout(isolation):
    job = Job.objects.enqueue("sleepy", {"seconds": 5})
    run_worker("sleepy", isolation=isolation)
    assert attempts(job) == [("timeout", "jobqueue.worker.runner.JobTimeout")]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_result_that_is_not_json_is_a_type_error(isolation):
    job = Job.objects.enqueue("badresult", {})
    run_worker("badresult", isolation=isolation)
    assert attempts(job) == [("failed", "builtins.TypeError")]


def test_a_class_path_longer_than_the_column_is_cut_to_fit():
    long_name = "Failure" * 50

    def raises_long(job):
        raise type(long_name, (Exception,), {})("long")

    registry.register("long-class", raises_long, max_attempts=1)
    try:
        job = Job.objects.enqueue("long-class", {})
        run_worker("long-class")
    finally:
        registry.unregister("long-class")
    [(outcome, error_class)] = attempts(job)
    assert outcome == "failed"
    size = constants.ERROR_CLASS_MAX_LENGTH
    assert Execution._meta.get_field("error_class").max_length == size < len(f"{__name__}.{long_name}")
    assert error_class == f"{__name__}.{long_name}"[:size]


def test_the_admin_shows_the_class_on_the_job_and_execution_pages():
    from django.urls import reverse

    from tests.test_admin_support import job_url, superuser_client

    job = Job.objects.enqueue("loud", {"fail": True}, max_attempts=1)
    run_worker("loud", isolation="inline")
    execution = Execution.objects.get(job=job)
    client = superuser_client()
    for url in (job_url(job), reverse("admin:jobqueue_execution_change", args=[execution.pk])):
        html = client.get(url).content.decode()
        assert "Error class" in html and "builtins.ValueError" in html, url
