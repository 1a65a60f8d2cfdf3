"""A job's page (read-only, chain navigation, buttons) and the "add job" form."""

from __future__ import annotations

import pytest

from jobqueue import engine
from jobqueue.models import Execution, Job, Topic

from .test_admin_support import (
    client_for,
    job_url,
    make_user,
    messages_of,
    operation_url,
    set_status,
    superuser_client,
)
from .workerutil import nested

pytestmark = pytest.mark.django_db(transaction=True)

ADD_URL = "/admin/jobqueue/job/add/"


@pytest.fixture
def root():
    return superuser_client()


def test_detail_page_shows_payload_result_error_and_executions(root):
    job = Job.objects.enqueue("echo", {"text": "hello", "n": [1, 2]})
    set_status(job, "failed", result={"partial": True}, error="boom: it broke", attempts=1)
    Execution.objects.create(
        job=job,
        attempt=1,
        outcome="failed",
        worker_id="w-1",
        stdout="line on stdout",
        stderr="line on stderr",
        traceback="Traceback (most recent call last):\nValueError",
        error="boom",
    )

    html = root.get(job_url(job)).content.decode()

    assert "&quot;text&quot;: &quot;hello&quot;" in html  # indented JSON, escaped
    assert "&quot;partial&quot;: true" in html
    assert "boom: it broke" in html
    assert "line on stdout" in html and "line on stderr" in html
    assert "Traceback (most recent call last):" in html
    assert 'name="_save"' not in html  # read-only: no save buttons


def test_detail_page_is_read_only(root):
    job = Job.objects.enqueue("echo", {})
    response = root.post(job_url(job), {"priority": 99, "status": "succeeded"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert (job.status, job.priority) == ("queued", 0)


def test_position_in_queue(root):
    first = Job.objects.enqueue("echo", {})
    second = Job.objects.enqueue("echo", {})
    assert "next to run" in root.get(job_url(first)).content.decode()
    assert "1 jobs ahead" in root.get(job_url(second)).content.decode()


def test_chain_navigation(root):
    parent = Job.objects.enqueue("echo", {})
    child = Job.objects.enqueue("echo", {}, parent=parent)
    dependent = Job.objects.enqueue("other", {}, depends_on=[parent])

    parent_page = root.get(job_url(parent)).content.decode()
    assert job_url(child) in parent_page and job_url(dependent) in parent_page
    assert job_url(parent) in root.get(job_url(child)).content.decode()
    assert job_url(parent) in root.get(job_url(dependent)).content.decode()


def test_buttons_apply_transitions(root):
    job = Job.objects.enqueue("echo", {}, delay=3600)
    page = root.get(job_url(job)).content.decode()
    for name in ("cancel", "run_now", "priority"):
        assert operation_url(job, name) in page
    assert operation_url(job, "requeue") not in page

    response = root.post(operation_url(job, "priority"), {"priority": "20"}, follow=True)
    assert "Priority set to 20." in messages_of(response)
    response = root.post(operation_url(job, "run_now"), follow=True)
    assert "Job queued to run now." in messages_of(response)
    job.refresh_from_db()
    assert (job.status, job.priority) == ("queued", 20)
    assert engine.queue_ids("echo") == [str(job.pk)]

    response = root.post(operation_url(job, "cancel"), follow=True)
    assert Job.objects.get(pk=job.pk).status == "cancelled"
    response = root.post(operation_url(job, "requeue"), follow=True)
    assert "Job requeued." in messages_of(response)
    assert Job.objects.get(pk=job.pk).status == "queued"


def test_requeue_while_the_entity_has_another_active_job_is_a_message(root):
    failed = set_status(Job.objects.enqueue("echo", {}, entity_id="img-1"), "failed")
    engine.remove("echo", str(failed.pk), "img-1")  # as the worker that failed it did
    active = Job.objects.enqueue("echo", {}, entity_id="img-1")
    response = root.post(operation_url(failed, "requeue"), follow=True)
    assert response.status_code == 200
    assert any("'img-1' already has an active job" in m for m in messages_of(response))
    assert Job.objects.get(pk=failed.pk).status == "failed"
    assert engine.queue_ids("echo") == [str(active.pk)]


def test_a_payload_nested_deeper_than_json_indents_is_shown_compact(root):
    # Stored before depth was bounded: the page shows it on one line instead of failing.
    job = Job.objects.enqueue("echo", {})
    Job.objects.filter(pk=job.pk).update(payload=nested(900))
    response = root.get(job_url(job))
    assert response.status_code == 200
    assert "[" * 900 + "]" * 900 in response.content.decode()


def test_a_refused_transition_is_a_message_not_an_error(root):
    job = Job.objects.enqueue("echo", {})
    response = root.post(operation_url(job, "requeue"), follow=True)
    assert response.status_code == 200
    assert any("only a failed or cancelled job can be requeued" in m for m in messages_of(response))
    response = root.post(operation_url(job, "priority"), {"priority": "900"}, follow=True)
    assert response.status_code == 200 and Job.objects.get(pk=job.pk).priority == 0
    assert root.get(operation_url(job, "cancel")).status_code == 405


# -- add --------------------------------------------------------------------------------


def add(client, **data):
    fields = {"topic": "echo", "payload": "{}", "priority": "", "entity_id": "", "delay": ""}
    fields.update(data)
    return client.post(ADD_URL, fields)


def test_add_job_enqueues_it(root):
    response = add(root, payload='{"a": 1}', priority="7", entity_id="e-1")
    job = Job.objects.get(entity_id="e-1")
    assert response.status_code == 302 and response["Location"] == job_url(job)
    assert (job.topic_id, job.payload, job.priority, job.status) == ("echo", {"a": 1}, 7, "queued")
    assert engine.queue_ids("echo") == [str(job.pk)]


def test_add_job_with_a_delay_schedules_it(root):
    add(root, delay="5m")
    job = Job.objects.get()
    assert job.status == "scheduled" and job.run_after is not None


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"payload": "{not json"}, "payload", "Not valid JSON"),
        ({"priority": "500"}, "priority", "100"),
        ({"delay": "soon"}, "delay", "Invalid duration"),
        ({"topic": "no-such-topic"}, "topic", "valid choice"),
        ({"entity_id": "x" * 300}, "entity_id", "limit"),
        ({"delay": "1000000000d"}, "delay", "too long"),
        ({"delay": "9" * 400}, "delay", "too long"),
        ({"payload": "[" * 101 + "]" * 101}, "payload", "nested"),
        ({"payload": "[" * 10_000 + "]" * 10_000}, "payload", "nested"),
    ],
)
def test_add_job_refuses_bad_input(root, data, field, text):
    response = add(root, **data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert text in " ".join(errors[field]), errors
    assert not Job.objects.exists()


def test_add_job_refuses_an_oversized_payload(root, settings):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "MAX_PAYLOAD_BYTES": 20}
    response = add(root, payload='{"text": "far more than twenty bytes"}')
    assert "limit is 20 bytes" in " ".join(response.context["adminform"].form.errors["payload"])
    assert not Job.objects.exists()


def test_add_job_maps_a_running_duplicate_onto_the_entity_field(root):
    busy = set_status(Job.objects.enqueue("echo", {}, entity_id="busy"), "running")
    response = add(root, entity_id="busy")
    assert response.status_code == 200
    assert "already has a running job" in " ".join(response.context["adminform"].form.errors["entity_id"])
    assert list(Job.objects.values_list("pk", flat=True)) == [busy.pk]


def test_add_job_on_a_pending_entity_raises_its_priority_only_with_change_priority_job(root):
    pending = Job.objects.enqueue("echo", {"a": 1}, entity_id="e-2", priority=1)
    plain = client_for(make_user("plain", "jobqueue.view_job", "jobqueue.add_job"))
    assert add(plain, entity_id="e-2", priority="60").status_code == 302
    assert Job.objects.get().priority == 1
    assert add(root, entity_id="e-2", priority="60").status_code == 302
    assert (Job.objects.get().pk, Job.objects.get().priority) == (pending.pk, 60)


def test_shell_topic_needs_its_permission(settings):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "SHELL_TOPIC": True}
    plain = client_for(make_user("plain", "jobqueue.view_job", "jobqueue.add_job"))
    assert 'value="shell"' not in plain.get(ADD_URL).content.decode()
    response = add(plain, topic="shell", payload='{"command": "true"}')
    assert response.status_code == 200 and "topic" in response.context["adminform"].form.errors
    assert not Job.objects.exists()

    trusted = client_for(
        make_user("trusted", "jobqueue.view_job", "jobqueue.add_job", "jobqueue.enqueue_shell_job")
    )
    assert 'value="shell"' in trusted.get(ADD_URL).content.decode()
    assert add(trusted, topic="shell", payload='{"command": "true"}').status_code == 302
    assert Job.objects.get().topic_id == "shell"


def test_a_topic_that_chains_into_the_shell_topic_needs_its_permission(settings):
    settings.JOBQUEUE = {**settings.JOBQUEUE, "SHELL_TOPIC": True}
    Topic.objects.resolve("echo")
    Topic.objects.filter(name="echo").update(next_topic="shell")
    plain = client_for(make_user("plain", "jobqueue.view_job", "jobqueue.add_job"))
    response = add(plain, payload='{"command": "true"}')
    assert response.status_code == 200
    assert "enqueue_shell_job" in " ".join(response.context["adminform"].form.errors["topic"])
    assert not Job.objects.exists()
