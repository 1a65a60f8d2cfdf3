"""The Prometheus scrape view: guarded like the JSON API, parsed by prometheus_client's
own parsers, and summing what several worker processes did."""

from __future__ import annotations

import signal

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils.crypto import get_random_string
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from jobqueue import engine
from jobqueue.contrib.metrics.collector import JobQueueCollector, families, gather
from jobqueue.contrib.metrics.exposition import render
from jobqueue.engine import metrics
from jobqueue.models import Execution, Job, Topic
from jobqueue.models_api import ApiToken
from tests.workerutil import WorkerPool, run_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/metrics"


def user(*codenames: str) -> User:
    person = User.objects.create_user(get_random_string(8))
    person.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return person


def scrape(client: Client | None = None, **headers: str) -> dict[str, dict[tuple, float]]:
    """The scraped samples by metric family: {family: {(sample name, labels...): value}}."""
    response = (client or Client()).get(URL, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        out[family.name] = {(s.name, *sorted(s.labels.items())): s.value for s in family.samples}
    return out


def bearer(person: User) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.objects.issue(person)[1]}"}


def test_anonymous_callers_and_users_without_the_permission_are_refused():
    response = Client().get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="jobqueue"'
    assert b"jobqueue_" not in response.content
    assert Client().get(URL, HTTP_AUTHORIZATION="Bearer jq_not-a-token").status_code == 401

    session = Client()
    session.force_login(user("add_job"))
    assert session.get(URL).status_code == 403
    assert Client().get(URL, **bearer(user())).status_code == 403
    inactive = user("view_job")
    key = bearer(inactive)
    inactive.is_active = False
    inactive.save()
    assert Client().get(URL, **key).status_code == 401


def test_a_token_or_a_session_holding_view_job_reads_every_topic():
    Job.objects.enqueue_many([("echo", {"n": n}) for n in range(3)])
    Job.objects.enqueue("flaky", {"succeed_on": 2})
    run_worker("echo", "flaky")
    Job.objects.enqueue("echo")

    samples = scrape(**bearer(user("view_job")))
    assert samples["jobqueue_jobs_enqueued"][("jobqueue_jobs_enqueued_total", ("topic", "echo"))] == 4
    assert samples["jobqueue_jobs_succeeded"][("jobqueue_jobs_succeeded_total", ("topic", "echo"))] == 3
    assert samples["jobqueue_jobs_succeeded"][("jobqueue_jobs_succeeded_total", ("topic", "flaky"))] == 1
    assert samples["jobqueue_jobs_retried"][("jobqueue_jobs_retried_total", ("topic", "flaky"))] == 1
    assert samples["jobqueue_jobs_failed"][("jobqueue_jobs_failed_total", ("topic", "flaky"))] == 0
    assert samples["jobqueue_jobs_lost"][("jobqueue_jobs_lost_total", ("topic", "echo"))] == 0
    jobs = samples["jobqueue_jobs"]
    assert jobs[("jobqueue_jobs", ("status", "queued"), ("topic", "echo"))] == 1
    assert jobs[("jobqueue_jobs", ("status", "running"), ("topic", "echo"))] == 0
    assert jobs[("jobqueue_jobs", ("status", "waiting"), ("topic", "flaky"))] == 0
    age = samples["jobqueue_oldest_queued_job_age_seconds"][("jobqueue_oldest_queued_job_age_seconds",
                                                              ("topic", "echo"))]
    assert 0 <= age < 60
    run = samples["jobqueue_job_run_seconds"]
    assert run[("jobqueue_job_run_seconds_count", ("topic", "flaky"))] == 2
    assert run[("jobqueue_job_run_seconds_bucket", ("le", "+Inf"), ("topic", "flaky"))] == 2
    buckets = [run[("jobqueue_job_run_seconds_bucket", ("le", le), ("topic", "echo"))]
               for le in ("0.005", "0.1", "1.0", "10.0", "3600.0", "+Inf")]
    assert buckets == sorted(buckets) and buckets[-1] == 3
    assert samples["jobqueue_job_wait_seconds"][("jobqueue_job_wait_seconds_count", ("topic", "echo"))] == 3
    assert samples["jobqueue_workers"] == {("jobqueue_workers",): 0}  # the burst workers are gone

    session = Client()
    session.force_login(user("view_job"))
    assert scrape(session)["jobqueue_jobs_enqueued"] == samples["jobqueue_jobs_enqueued"]


def parsed(text: str) -> list[tuple]:
    return sorted(
        (f.name, f.type, f.documentation, sorted((s.name, sorted(s.labels.items()), s.value) for s in f.samples))
        for f in text_string_to_metric_families(text)
    )


def test_the_view_writes_what_prometheus_client_writes_for_the_collector():
    Job.objects.enqueue_many([("echo", {}), ("flaky", {"succeed_on": 2}), ("other", {})])
    run_worker("flaky")
    Job.objects.enqueue("echo", depends_on=[Job.objects.enqueue("other", delay=60)])
    engine.beat("w-live", {"topics": ["echo"]})
    snapshot = gather()

    class Fixed(Collector):
        def collect(self):
            return families(snapshot)

    fixed = CollectorRegistry(auto_describe=False)
    fixed.register(Fixed())
    assert parsed(render(snapshot)) == parsed(generate_latest(fixed).decode())
    assert len(parsed(render(snapshot))) == 11  # 4 gauges, 5 counters, 2 histograms

    # The collector itself, registered in a registry of one's own, reads the same state.
    registry = CollectorRegistry()
    registry.register(JobQueueCollector())
    text = generate_latest(registry).decode()
    assert 'jobqueue_jobs_retried_total{topic="flaky"} 1.0' in text
    assert 'jobqueue_jobs{status="waiting",topic="echo"} 1.0' in text
    assert "jobqueue_workers 1.0" in text


def test_only_get_is_allowed():
    response = Client().post(URL, **bearer(user("view_job")))
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"


@pytest.mark.slow
def test_two_worker_processes_counts_add_up(tmp_path):
    Topic.objects.filter(name="sleepy").update(concurrency=2)
    jobs = Job.objects.enqueue_many([("sleepy", {"seconds": 0.05}) for _ in range(40)])
    pool = WorkerPool(tmp_path)
    try:
        first = pool.start("--topics", "sleepy", "--worker-id", "metrics-a")
        second = pool.start("--topics", "sleepy", "--worker-id", "metrics-b")
        key = bearer(user("view_job"))

        def all_done() -> bool:
            return Job.objects.filter(pk__in=[j.pk for j in jobs], status="succeeded").count() == len(jobs)

        wait_for(all_done, 60, "40 jobs to succeed on two workers")
        # The last success of each worker is acknowledged (and counted) with its next pop.
        wait_for(lambda: metrics.read(["sleepy"])["sleepy"].counters["succeeded"] == 40, 10, "40 counted")
        samples = wait_for(lambda: (s := scrape(**key)) and s["jobqueue_workers"][("jobqueue_workers",)] == 2
                           and s, 10, "both workers to be live")
        for worker in (first, second):
            worker.signal(signal.SIGTERM)
            assert worker.wait() == 0, worker.output()
    finally:
        pool.close()
    by_worker = {w: Execution.objects.filter(worker_id=w).count() for w in ("metrics-a", "metrics-b")}
    assert sum(by_worker.values()) == 40 and min(by_worker.values()) > 0, by_worker
    topic = ("topic", "sleepy")
    assert samples["jobqueue_jobs_succeeded"][("jobqueue_jobs_succeeded_total", topic)] == 40
    assert samples["jobqueue_jobs_enqueued"][("jobqueue_jobs_enqueued_total", topic)] == 40
    assert samples["jobqueue_job_run_seconds"][("jobqueue_job_run_seconds_count", topic)] == 40
    run_sum = samples["jobqueue_job_run_seconds"][("jobqueue_job_run_seconds_sum", topic)]
    assert 40 * 0.05 <= run_sum < 40 * 1.0
    assert samples["jobqueue_topic_workers"][("jobqueue_topic_workers", topic)] == 2
