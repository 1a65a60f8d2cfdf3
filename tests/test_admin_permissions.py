"""Who may do what: view-only staff act on nothing, and each action needs its own permission."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobqueue import engine
from jobqueue.models import Job, Topic

from .test_admin_support import (
    DASHBOARD,
    DASHBOARD_FRAGMENT,
    JOB_CHANGELIST,
    TOPIC_CHANGELIST,
    action,
    client_for,
    confirm,
    job_url,
    make_user,
    operation_url,
    set_status,
)

pytestmark = pytest.mark.django_db(transaction=True)

VIEW_ALL = ("jobqueue.view_job", "jobqueue.view_topic", "jobqueue.view_execution")
JOB_ACTIONS = {
    "cancel_jobs": "cancel_job",
    "requeue_jobs": "requeue_job",
    "change_priority": "change_priority_job",
    "run_now": "run_now_job",
    "delete_jobs": "delete_job",
}
TOPIC_ACTIONS = {
    "pause_topic": ["pause", "resume"],
    "unlock_topic": ["unlock"],
    "purge_topic": ["purge_queued"],
    "requeue_job": ["requeue_failed"],
    "change_topic": ["reset_overrides"],
}


def action_choices(client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200
    form = response.context.get("action_form")
    return [value for value, _label in form.fields["action"].choices if value] if form else []


def snapshot(*jobs: Job) -> list[tuple]:
    return [
        tuple(Job.objects.filter(pk=j.pk).values_list("status", "priority", "attempts").first() or ())
        for j in jobs
    ]


def test_view_only_staff_browses_but_acts_on_nothing():
    viewer = client_for(make_user("viewer", *VIEW_ALL))
    queued = Job.objects.enqueue("echo", {})
    scheduled = Job.objects.enqueue("echo", {}, delay=3600)
    failed = set_status(Job.objects.enqueue("other", {}), "failed")
    jobs = [queued, scheduled, failed]
    before = snapshot(*jobs)

    changelist = viewer.get(JOB_CHANGELIST).content.decode()
    assert 'name="action"' not in changelist and "/admin/jobqueue/job/add/" not in changelist
    assert "/operation/" not in viewer.get(job_url(queued)).content.decode()
    assert viewer.get(DASHBOARD).status_code == 200

    for name in JOB_ACTIONS:
        action(viewer, name, jobs, select_across=True)
    confirm(viewer, "change_priority", jobs, apply="1", priority="50")
    confirm(viewer, "delete_jobs", jobs, post="yes")
    for job, name in ((queued, "cancel"), (failed, "requeue"), (scheduled, "run_now"), (queued, "priority")):
        assert viewer.post(operation_url(job, name), {"priority": "50"}).status_code == 403
    assert viewer.get("/admin/jobqueue/job/add/").status_code == 403
    assert viewer.post("/admin/jobqueue/job/add/", {"topic": "echo", "payload": "{}"}).status_code == 403

    assert snapshot(*jobs) == before
    assert str(queued.pk) in engine.queue_ids("echo")


def test_view_only_staff_cannot_touch_topics():
    viewer = client_for(make_user("viewer", *VIEW_ALL))
    topic = Topic.objects.get(name="echo")
    set_status(Job.objects.enqueue("echo", {}), "failed")

    assert 'name="action"' not in viewer.get(TOPIC_CHANGELIST).content.decode()
    data = {"action": "", "index": 0, "_selected_action": [str(topic.pk)]}
    for name in ("pause", "resume", "unlock", "requeue_failed", "purge_queued", "reset_overrides"):
        viewer.post(TOPIC_CHANGELIST, {**data, "action": name})
        page_op = reverse("admin:jobqueue_topic_operation", args=[topic.pk, name])
        assert viewer.post(page_op).status_code in (403, 404)
    change = reverse("admin:jobqueue_topic_change", args=[topic.pk])
    assert viewer.post(change, {"concurrency": 9, "isolation": "inline"}).status_code == 403

    topic.refresh_from_db()
    assert (topic.is_paused, topic.concurrency) == (False, 1)
    assert not engine.is_paused("echo")
    assert Job.objects.get().status == "failed"


@pytest.mark.parametrize(("name", "perm"), sorted(JOB_ACTIONS.items()))
def test_each_job_action_needs_its_own_permission(name, perm):
    Job.objects.enqueue("echo", {})
    client = client_for(make_user("u", "jobqueue.view_job", f"jobqueue.{perm}"))
    assert action_choices(client, JOB_CHANGELIST) == [name]


@pytest.mark.parametrize(("perm", "names"), sorted(TOPIC_ACTIONS.items()))
def test_each_topic_action_needs_its_own_permission(perm, names):
    client = client_for(make_user("u", "jobqueue.view_topic", f"jobqueue.{perm}"))
    assert action_choices(client, TOPIC_CHANGELIST) == names


def test_a_permission_for_one_action_allows_no_other():
    queued = Job.objects.enqueue("echo", {})
    client = client_for(make_user("canceller", "jobqueue.view_job", "jobqueue.cancel_job"))

    action(client, "change_priority", [queued])
    confirm(client, "change_priority", [queued], apply="1", priority="50")
    confirm(client, "delete_jobs", [queued], post="yes")
    assert client.post(operation_url(queued, "priority"), {"priority": "50"}).status_code == 403
    assert snapshot(queued) == [("queued", 0, 0)]

    action(client, "cancel_jobs", [queued])
    assert Job.objects.get(pk=queued.pk).status == "cancelled"


def test_staff_without_view_permission_sees_nothing():
    client = client_for(make_user("nobody"))
    Job.objects.enqueue("echo", {})
    for url in (JOB_CHANGELIST, TOPIC_CHANGELIST, DASHBOARD, DASHBOARD_FRAGMENT):
        assert client.get(url).status_code == 403, url


def test_anonymous_users_are_sent_to_the_login_page():
    from django.test import Client

    for url in (JOB_CHANGELIST, DASHBOARD, DASHBOARD_FRAGMENT):
        response = Client().get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_executions_are_read_only_even_for_a_superuser():
    from jobqueue.models import Execution

    from .test_admin_support import superuser_client

    job = set_status(Job.objects.enqueue("echo", {}), "failed")
    execution = Execution.objects.create(job=job, attempt=1, outcome="failed", stdout="out")
    root = superuser_client()
    change = reverse("admin:jobqueue_execution_change", args=[execution.pk])
    assert root.get(change).status_code == 200
    assert root.post(change, {"stdout": "rewritten", "outcome": "succeeded"}).status_code == 403
    assert root.get(reverse("admin:jobqueue_execution_add")).status_code == 403
    assert (
        root.post(
            reverse("admin:jobqueue_execution_delete", args=[execution.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    execution.refresh_from_db()
    assert (execution.stdout, execution.outcome) == ("out", "failed")
