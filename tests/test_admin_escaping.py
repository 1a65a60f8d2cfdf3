"""Whatever a job, its handler or a worker wrote is shown escaped, on every admin page."""

from __future__ import annotations

import json
import time

import pytest
from django.urls import reverse

from jobqueue import engine
from jobqueue.models import Execution, Job, Topic

from .test_admin_support import (
    DASHBOARD,
    DASHBOARD_FRAGMENT,
    JOB_CHANGELIST,
    TOPIC_CHANGELIST,
    job_url,
    set_status,
    superuser_client,
)

pytestmark = pytest.mark.django_db(transaction=True)

XSS = '<script>alert("xss")</script>'
RAW = "<script>alert"
ESCAPED = "&lt;script&gt;alert"


@pytest.fixture
def hostile_job():
    """A job whose every text field, execution and worker record carries a script tag."""
    Topic.objects.filter(name="echo").update(description=XSS)
    job = Job.objects.enqueue("echo", {"html": XSS, XSS: [XSS]}, entity_id=XSS)
    set_status(
        job,
        "failed",
        result={"echo": XSS},
        error=XSS,
        progress_message=XSS,
        stage=XSS,
        worker_id=XSS,
        progress=50,
    )
    Execution.objects.create(
        job=job,
        attempt=1,
        outcome="failed",
        worker_id=XSS,
        hostname=XSS,
        stdout=XSS,
        stderr=XSS,
        traceback=XSS,
        error=XSS,
    )
    running = set_status(Job.objects.enqueue("echo", {}), "running", progress_message=XSS, stage=XSS)
    engine.beat(
        XSS,
        {
            "host": XSS,
            "pid": 1,
            "topics": [XSS],
            "wanted": [XSS],
            "current": [str(running.pk)],
            "processed": 1,
            "started": time.time(),
        },
    )
    assert engine.TopicLock("echo", token=XSS, worker_id=XSS).acquire()
    return job


def assert_escaped(client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 200, url
    html = response.content.decode()
    assert RAW not in html, f"unescaped script tag on {url}"
    assert ESCAPED in html or "&lt;script&gt;" in html, f"the hostile text is not shown on {url}"


def test_every_page_escapes_what_jobs_wrote(hostile_job):
    client = superuser_client()
    execution = Execution.objects.get(job=hostile_job)
    echo = Topic.objects.get(name="echo")
    for url in (
        JOB_CHANGELIST,
        JOB_CHANGELIST + "?q=" + XSS,
        job_url(hostile_job),
        DASHBOARD,
        DASHBOARD_FRAGMENT,
        TOPIC_CHANGELIST,
        reverse("admin:jobqueue_topic_change", args=[echo.pk]),
        reverse("admin:jobqueue_execution_changelist"),
        reverse("admin:jobqueue_execution_change", args=[execution.pk]),
    ):
        assert_escaped(client, url)


def test_payload_is_shown_as_escaped_json(hostile_job):
    html = superuser_client().get(job_url(hostile_job)).content.decode()
    assert (
        json.dumps({"html": XSS}, indent=2)[2:-2]
        .replace('"', "&quot;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        in html
    )


def test_add_form_redisplays_hostile_input_escaped():
    client = superuser_client()
    response = client.post("/admin/jobqueue/job/add/", {"topic": "echo", "payload": XSS, "entity_id": XSS})
    html = response.content.decode()
    assert response.status_code == 200 and "Not valid JSON" in html
    assert RAW not in html and ESCAPED in html
    assert not Job.objects.exists()
