"""The topic admin: live numbers, pause / resume / unlock / requeue / purge, operator overrides."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobqueue import engine, registry
from jobqueue.models import Job, Topic

from .test_admin_support import TOPIC_CHANGELIST, messages_of, set_status, superuser_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def root():
    return superuser_client()


def topic_action(client, name: str, *topics: Topic, follow: bool = True):
    data = {"action": name, "index": 0, "select_across": "0", "_selected_action": [str(t.pk) for t in topics]}
    return client.post(TOPIC_CHANGELIST, data, follow=follow)


def change_url(topic: Topic) -> str:
    return reverse("admin:jobqueue_topic_change", args=[topic.pk])


def test_list_shows_counts_depth_by_priority_and_holders(root):
    for priority in (5, 5, 0):
        Job.objects.enqueue("echo", {}, priority=priority)
    set_status(Job.objects.enqueue("echo", {}), "running")
    set_status(Job.objects.enqueue("echo", {}), "failed")
    assert engine.TopicLock("echo", token="tok-1", worker_id="worker-a").acquire(limit=1)

    response = root.get(TOPIC_CHANGELIST)
    html = response.content.decode()
    echo = next(t for t in response.context["cl"].result_list if t.name == "echo")

    assert (echo.jq_stats.count("queued"), echo.jq_stats.count("running"), echo.jq_stats.count("failed")) == (
        3,
        1,
        1,
    )
    assert echo.jq_stats.by_priority == [(5, 2), (0, 1)]
    assert "p5 × 2" in html and "p0 × 1" in html
    assert "Redis: 5 queued" in html  # set_status() changed rows only, not their Redis entries
    assert "worker-a" in html


def test_list_costs_the_same_queries_for_many_topics(root):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert root.get(url).status_code == 200
        return len(ctx.captured_queries)

    Topic.objects.create(name="extra-0")
    one = queries(TOPIC_CHANGELIST + "?q=extra-0")
    for i in range(1, 12):
        Topic.objects.create(name=f"extra-{i}")
        Job.objects.enqueue(f"extra-{i}", {})
    assert queries(TOPIC_CHANGELIST + "?q=extra-0") == one
    assert queries(TOPIC_CHANGELIST + "?q=extra") == one  # twelve topics, no more queries


def test_pause_and_resume(root):
    echo = Topic.objects.get(name="echo")
    response = topic_action(root, "pause", echo)
    assert "Paused 1 topic." in messages_of(response)
    echo.refresh_from_db()
    assert echo.is_paused and engine.is_paused("echo")
    Job.objects.enqueue("echo", {})
    assert engine.pop("echo") == []  # a paused topic hands out nothing

    topic_action(root, "resume", echo)
    echo.refresh_from_db()
    assert not echo.is_paused and not engine.is_paused("echo")
    assert len(engine.pop("echo")) == 1


def test_unlock_frees_every_slot(root):
    echo = Topic.objects.get(name="echo")
    assert engine.TopicLock("echo", token="a").acquire(limit=2)
    assert engine.TopicLock("echo", token="b").acquire(limit=2)
    response = topic_action(root, "unlock", echo)
    assert "Freed 2 slots." in messages_of(response)
    assert echo.holders() == []


def test_requeue_failed_and_purge(root):
    echo, other = Topic.objects.get(name="echo"), Topic.objects.get(name="other")
    failed = [set_status(Job.objects.enqueue("echo", {}), "failed") for _ in range(3)]
    running = Job.objects.enqueue("other", {})
    assert engine.pop("other") == [str(running.pk)]
    set_status(running, "running")
    queued = [Job.objects.enqueue("other", {}) for _ in range(2)]
    scheduled = Job.objects.enqueue("other", {}, delay=600)

    response = topic_action(root, "requeue_failed", echo)
    assert "Requeued 3 failed jobs." in messages_of(response)
    assert Job.objects.filter(pk__in=[j.pk for j in failed], status="queued").count() == 3

    response = topic_action(root, "purge_queued", other)
    assert "Purged 3 jobs." in messages_of(response)
    assert Job.objects.filter(pk__in=[j.pk for j in [*queued, scheduled]], status="cancelled").count() == 3
    assert Job.objects.get(pk=running.pk).status == "running"
    assert engine.depths("other") == {"queued": 0, "leased": 1, "scheduled": 0}
    assert len(engine.queue_ids("echo")) == 3  # the other topic is untouched


def test_page_buttons(root):
    echo = Topic.objects.get(name="echo")
    page = root.get(change_url(echo)).content.decode()
    pause = reverse("admin:jobqueue_topic_operation", args=[echo.pk, "pause"])
    assert pause in page
    root.post(pause)
    assert Topic.objects.get(pk=echo.pk).is_paused
    assert root.get(pause).status_code == 405


def test_edited_runtime_settings_survive_handler_sync(root):
    echo = Topic.objects.get(name="echo")
    data = {
        "description": echo.description,
        "concurrency": 4,
        "default_priority": echo.default_priority,
        "max_attempts": 9,
        "timeout": echo.timeout,
        "retry_backoff": echo.retry_backoff,
        "isolation": echo.isolation,
        "next_topic": "",
        "cron": "",
    }
    response = root.post(change_url(echo), data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    echo.refresh_from_db()
    assert (echo.concurrency, echo.max_attempts) == (4, 9)
    assert echo.operator_overrides == ["concurrency", "max_attempts"]
    Topic.objects.sync(registry.get("echo"))  # the handler says max_attempts=2
    echo.refresh_from_db()
    assert (echo.concurrency, echo.max_attempts) == (4, 9)

    topic_action(root, "reset_overrides", echo)
    echo.refresh_from_db()
    assert echo.operator_overrides == [] and echo.max_attempts == 2


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("cron", "every day", "5 fields"),
        ("cron", "0 0 30 2 *", "day-of-month"),  # could never run
        ("next_topic", "Bad Name", "Invalid topic name"),
    ],
)
def test_runtime_settings_are_validated(root, field, value, text):
    echo = Topic.objects.get(name="echo")
    data = {
        "concurrency": 1,
        "default_priority": 0,
        "max_attempts": 2,
        "timeout": 30,
        "retry_backoff": 2,
        "isolation": "inline",
        "next_topic": "",
        "cron": "",
        field: value,
    }
    response = root.post(change_url(echo), data)
    assert response.status_code == 200
    assert text in " ".join(response.context["adminform"].form.errors[field])
