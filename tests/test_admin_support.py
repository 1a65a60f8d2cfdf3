"""Helpers shared by the admin test files (no tests here): users with chosen permissions,
logged-in clients, jobs put in a given state."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobqueue import registry
from jobqueue.models import Job, Topic

JOB_CHANGELIST = "/admin/jobqueue/job/"
TOPIC_CHANGELIST = "/admin/jobqueue/topic/"
DASHBOARD = "/admin/jobqueue/job/dashboard/"
DASHBOARD_FRAGMENT = "/admin/jobqueue/job/dashboard/fragment/"


def make_user(username: str, *perms: str, superuser: bool = False) -> User:
    """A staff user holding exactly ``perms`` (``"jobqueue.cancel_job"``...)."""
    user = User.objects.create_user(username, password="secret-pw", is_staff=True, is_superuser=superuser)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return User.objects.get(pk=user.pk)  # a fresh instance: no stale permission cache


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def superuser_client() -> Client:
    return client_for(make_user("root", superuser=True))


def set_status(job: Job, status: str, **values: Any) -> Job:
    """Force a job into ``status`` (the database only; Redis is the caller's business)."""
    if status in ("succeeded", "failed", "cancelled"):
        values.setdefault("finished_at", timezone.now())
    if status in ("running", "succeeded", "failed"):
        values.setdefault("started_at", timezone.now())
    Job.objects.filter(pk=job.pk).update(status=status, **values)
    job.refresh_from_db()
    return job


def topic_form(topic: Topic, **changes: Any) -> dict[str, Any]:
    """The fields of a topic's change form as it stands, with ``changes`` made (an empty
    field, such as an unset limit, is sent as a browser sends it: empty text)."""
    fields = {name: getattr(topic, name) for name in registry.TOPIC_FIELDS}
    return {name: "" if value is None else value for name, value in {**fields, **changes}.items()}


def topic_url(topic: Topic) -> str:
    return reverse("admin:jobqueue_topic_change", args=[topic.pk])


def job_url(job: Job) -> str:
    return reverse("admin:jobqueue_job_change", args=[job.pk])


def operation_url(job: Job, name: str) -> str:
    return reverse("admin:jobqueue_job_operation", args=[job.pk, name])


def action(
    client: Client,
    action_name: str,
    jobs: list[Job] | None = None,
    url: str = JOB_CHANGELIST,
    select_across: bool = False,
    follow: bool = False,
    **extra: Any,
) -> Any:
    """POST a change-list action the way the admin's form does."""
    data: dict[str, Any] = {
        "action": action_name,
        "index": 0,
        "select_across": "1" if select_across else "0",
        "_selected_action": [str(j.pk) for j in (jobs or [])],
        **extra,
    }
    return client.post(url, data, follow=follow)


def confirm(
    client: Client,
    action_name: str,
    jobs: list[Job],
    url: str = JOB_CHANGELIST,
    select_across: bool = False,
    follow: bool = False,
    **extra: Any,
) -> Any:
    """POST the second step of an action with an intermediate page (no ``index``)."""
    data: dict[str, Any] = {
        "action": action_name,
        "_selected_action": [str(j.pk) for j in jobs],
        **({"select_across": "1"} if select_across else {}),
        **extra,
    }
    return client.post(url, data, follow=follow)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []
