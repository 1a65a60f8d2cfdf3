"""The JSON API's endpoints: who may call each one, what it answers, and every error code."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone
from django.utils.crypto import get_random_string

from jobqueue import engine
from jobqueue.models import Execution, Job
from jobqueue.models_api import ApiToken

pytestmark = pytest.mark.django_db(transaction=True)

API = "/jobs/api"


def grant(user: User, *codenames: str) -> User:
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="jobqueue", codename__in=codenames)
    )
    return user


class Api:
    """A test client that sends a bearer token and JSON bodies."""

    def __init__(self, key: str | None):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, method: str, path: str, body=None, raw: bytes | str | None = None, **extra):
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        return getattr(self.client, method.lower())(
            f"{API}{path}", data=data, content_type="application/json", headers=self.headers, **extra
        )

    def get(self, path: str, params=None):
        return self.client.get(f"{API}{path}", params or {}, headers=self.headers)


def token_for(user: User) -> str:
    return ApiToken.objects.issue(user, name="tests")[1]


@pytest.fixture
def superuser_api() -> Api:
    return Api(token_for(User.objects.create_superuser("root", "root@example.com", None)))


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("staff", is_staff=True)  # no password: hashing one is slow


def error_code(response) -> str:
    assert response["Content-Type"] == "application/json", response.content
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return body["error"]["code"]


def make_job(status: str = "queued", topic: str = "echo", **values) -> Job:
    job = Job.objects.enqueue(topic, {"n": 1})
    if status != "queued":
        now = timezone.now()
        extra = {"finished_at": now} if status in ("succeeded", "failed", "cancelled") else {}
        if status == "running":
            extra = {"started_at": now, "attempts": 1, "worker_id": "w1"}
        Job.objects.filter(pk=job.pk).update(status=status, **extra, **values)
        engine.remove(topic, str(job.pk), None)  # as if a worker had popped it
        job.refresh_from_db()
    return job


# -- each endpoint: anonymous 401, staff without the permission 403, with it success ----------

ENDPOINTS = [
    # (name, method, path (with {id}), permission, job status needed, body, expected status)
    ("list", "GET", "/jobs/", "view_job", None, None, 200),
    ("create", "POST", "/jobs/", "add_job", None, {"topic": "echo", "payload": {"a": 1}}, 201),
    ("get", "GET", "/jobs/{id}", "view_job", "queued", None, 200),
    ("delete", "DELETE", "/jobs/{id}", "delete_job", "succeeded", None, 204),
    (
        "progress",
        "POST",
        "/jobs/{id}/progress",
        "change_job",
        "running",
        {"progress": 40, "message": "m"},
        200,
    ),
    ("cancel", "POST", "/jobs/{id}/cancel", "cancel_job", "queued", {"reason": "no longer needed"}, 200),
    ("requeue", "POST", "/jobs/{id}/requeue", "requeue_job", "failed", {}, 200),
    ("stats", "GET", "/stats", "view_job", None, None, 200),
    ("topic-stats", "GET", "/stats/echo", "view_job", None, None, 200),
    ("health", "GET", "/health", "view_job", None, None, 200),
]


@pytest.mark.parametrize(
    "name, method, path, perm, status, body, expected", ENDPOINTS, ids=[e[0] for e in ENDPOINTS]
)
def test_endpoint_permissions(staff, name, method, path, perm, status, body, expected):
    job = make_job(status) if status else None
    url = path.format(id=job.pk if job else "")

    anonymous = Api(None).call(method, url, body)
    assert anonymous.status_code == 401 and error_code(anonymous) == "not_authenticated"
    assert anonymous["WWW-Authenticate"].startswith("Bearer")

    key = token_for(staff)
    denied = Api(key).call(method, url, body)
    assert denied.status_code == 403 and error_code(denied) == "permission_denied"
    assert f"jobqueue.{perm}" in denied.json()["error"]["message"]

    grant(staff, perm)
    allowed = Api(key).call(method, url, body)
    assert allowed.status_code == expected, allowed.content
    if job is not None and name != "delete":
        assert allowed.json()["id"] == str(job.pk)


def test_create_returns_the_job_and_its_location(superuser_api):
    response = superuser_api.call(
        "POST",
        "/jobs/",
        {"topic": "echo", "payload": {"x": [1, 2]}, "priority": 7, "delay": 60, "max_attempts": 2},
    )
    assert response.status_code == 201
    data = response.json()
    job = Job.objects.get(pk=data["id"])
    assert response["Location"] == f"{API}/jobs/{job.pk}"
    assert (job.topic_id, job.payload, job.priority, job.max_attempts) == ("echo", {"x": [1, 2]}, 7, 2)
    assert data["status"] == job.status == "scheduled"
    assert str(job.pk) not in engine.queue_ids("echo")  # scheduled, not queued


def test_create_with_run_after_and_dependencies(superuser_api):
    first = make_job("queued")
    when = (timezone.now() + timezone.timedelta(hours=2)).isoformat()
    response = superuser_api.call(
        "POST",
        "/jobs/",
        {"topic": "other", "run_after": when, "depends_on": [str(first.pk)], "parent": str(first.pk)},
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == "waiting" and job.parent_id == first.pk
    detail = superuser_api.get(f"/jobs/{job.pk}").json()
    assert detail["depends_on"] == [str(first.pk)]


def test_run_after_is_stored_in_utc_whatever_its_offset(superuser_api):
    # PostgreSQL refuses offsets past 15:59; the API converts first.
    body = {"topic": "echo", "run_after": "2031-07-08T15:28:01+21:19"}
    response = superuser_api.call("POST", "/jobs/", body)
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.run_after == dt.datetime(2031, 7, 7, 18, 9, 1, tzinfo=dt.timezone.utc)


def test_create_with_an_entity_returns_the_pending_job(superuser_api):
    first = superuser_api.call("POST", "/jobs/", {"topic": "echo", "entity_id": "img-1"})
    again = superuser_api.call("POST", "/jobs/", {"topic": "echo", "entity_id": "img-1", "priority": 9})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["priority"] == 9


def test_an_entity_hit_raises_the_priority_only_with_change_priority_job(staff):
    pending = Job.objects.enqueue("echo", {}, entity_id="img-2", priority=1)
    api = Api(token_for(grant(staff, "add_job", "view_job")))
    response = api.call("POST", "/jobs/", {"topic": "echo", "entity_id": "img-2", "priority": 50})
    assert response.status_code == 200, response.content
    assert (response.json()["id"], response.json()["priority"]) == (str(pending.pk), 1)
    assert Job.objects.get(pk=pending.pk).priority == 1
    grant(staff, "change_priority_job")
    response = Api(token_for(User.objects.get(pk=staff.pk))).call(
        "POST", "/jobs/", {"topic": "echo", "entity_id": "img-2", "priority": 50}
    )
    assert (response.status_code, response.json()["priority"]) == (200, 50)
    assert Job.objects.get(pk=pending.pk).priority == 50


def test_get_shows_executions_and_queue_position(superuser_api):
    job = make_job("failed", error="boom")
    Execution.objects.create(
        job=job, attempt=1, worker_id="w1", outcome="failed", error="boom", traceback="tb"
    )
    data = superuser_api.get(f"/jobs/{job.pk}").json()
    assert data["status"] == "failed" and data["error"] == "boom"
    assert [(e["attempt"], e["outcome"], e["traceback"]) for e in data["executions"]] == [(1, "failed", "tb")]
    assert data["position_in_queue"] is None
    queued = make_job("queued")
    assert superuser_api.get(f"/jobs/{queued.pk}").json()["position_in_queue"] == 0


def test_progress_cancel_requeue_delete_change_the_job(superuser_api):
    running = make_job("running")
    response = superuser_api.call(
        "POST", f"/jobs/{running.pk}/progress", {"progress": 55.5, "stage": "resizing"}
    )
    running.refresh_from_db()
    assert (running.progress, running.stage) == (55, "resizing") == (response.json()["progress"], "resizing")

    response = superuser_api.call("POST", f"/jobs/{running.pk}/cancel")
    assert response.status_code == 202  # a running job is asked to stop
    assert engine.abort_requested("echo", str(running.pk))

    queued = make_job("queued")
    assert superuser_api.call("POST", f"/jobs/{queued.pk}/cancel").json()["status"] == "cancelled"
    response = superuser_api.call("POST", f"/jobs/{queued.pk}/requeue", {"reset_attempts": False})
    assert response.json()["status"] == "queued"
    assert str(queued.pk) in engine.queue_ids("echo")

    done = make_job("succeeded")
    Execution.objects.create(job=done, attempt=1, outcome="succeeded")
    assert superuser_api.call("DELETE", f"/jobs/{done.pk}").status_code == 204
    assert (
        not Job.objects.filter(pk=done.pk).exists() and not Execution.objects.filter(job_id=done.pk).exists()
    )


def test_stats(superuser_api):
    make_job("queued"), make_job("queued"), make_job("failed"), make_job("queued", topic="other")
    data = superuser_api.get("/stats").json()
    echo = next(t for t in data["topics"] if t["topic"] == "echo")
    assert echo["by_status"]["queued"] == 2 and echo["by_status"]["failed"] == 1
    assert data["totals"]["queued"] == 3
    topic = superuser_api.get("/stats/echo").json()
    assert topic["by_status"]["queued"] == 2 and topic["by_priority"] == {"0": 2}
    assert topic["redis"] == {"queued": 2, "leased": 0, "scheduled": 0}


def test_health_reports_database_redis_and_workers(superuser_api):
    data = superuser_api.get("/health").json()
    assert data["database"]["ok"] and data["redis"]["ok"]
    assert data["status"] == "degraded" and data["workers"]["live"] == 0
    engine.beat("host:1:abc", {"topics": ["echo"]})
    data = superuser_api.get("/health").json()
    assert data["status"] == "ok" and data["workers"] == {"live": 1, "stale": 0, "ids": ["host:1:abc"]}


def test_health_is_503_when_redis_is_down(superuser_api):
    from django.conf import settings

    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "REDIS_URL": "redis://127.0.0.1:1/0"}):
        engine.reset_clients()
        response = superuser_api.get("/health")
    engine.reset_clients()
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "down" and data["database"]["ok"] and not data["redis"]["ok"]


# -- error codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, code",
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('"text"', "bad_json"),
        ("", "bad_json"),
        ('{"topic": "echo", "payload": NaN}', "bad_json"),
        (b"\xff\xfe", "bad_json"),
    ],
)
def test_bad_json_is_400(superuser_api, raw, code):
    response = superuser_api.call("POST", "/jobs/", raw=raw)
    assert response.status_code == 400 and error_code(response) == code


@pytest.mark.parametrize(
    "body, code",
    [
        ({"payload": {}}, "invalid"),
        ({"topic": "echo", "priority": 500}, "invalid"),
        ({"topic": "echo", "priority": "high"}, "invalid"),
        ({"topic": "echo", "priority": True}, "invalid"),
        ({"topic": "echo", "colour": "red"}, "invalid"),
        ({"topic": "echo", "run_after": "tomorrow"}, "invalid"),
        ({"topic": "echo", "run_after": "2030-01-01T00:00:00"}, "invalid"),  # naive
        ({"topic": "echo", "depends_on": ["nope"]}, "invalid"),
        ({"topic": "echo", "depends_on": [str(uuid.uuid4())]}, "invalid"),
        ({"topic": "echo", "parent": str(uuid.uuid4())}, "invalid"),
        ({"topic": "echo", "entity_id": ""}, "invalid"),
        ({"topic": "echo", "max_attempts": 2**31}, "invalid"),  # more than a database integer
        ({"topic": "echo", "timeout": 10**12}, "invalid"),
        ({"topic": "echo", "delay": 1e300}, "invalid"),
        ({"topic": "echo", "run_after": "9999-12-31T23:00:00-14:00"}, "invalid"),  # past year 9999 in UTC
        ({"topic": "Not A Topic"}, "invalid"),
        ({"topic": "no-such-topic"}, "unknown_topic"),
    ],
)
def test_invalid_input_is_400(superuser_api, body, code):
    response = superuser_api.call("POST", "/jobs/", body)
    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert not Job.objects.exists()


@pytest.mark.parametrize("levels", [101, 1_500, 10_000])
def test_a_payload_nested_too_deeply_is_400(superuser_api, levels):
    raw = '{"topic": "echo", "payload": ' + "[" * levels + "]" * levels + "}"
    response = superuser_api.call("POST", "/jobs/", raw=raw)
    assert response.status_code == 400 and error_code(response) == "invalid"
    assert "nested" in response.json()["error"]["message"]
    assert not Job.objects.exists()


def test_a_dependency_named_twice_is_one_dependency(superuser_api):
    first = make_job()
    response = superuser_api.call("POST", "/jobs/", {"topic": "echo", "depends_on": [str(first.pk)] * 2})
    assert response.status_code == 201, response.content
    assert superuser_api.get(f"/jobs/{response.json()['id']}").json()["depends_on"] == [str(first.pk)]


def test_a_form_instead_of_json_is_400_for_a_session_and_a_token(superuser_api):
    secret = get_random_string(32)
    session = Client(enforce_csrf_checks=True)
    session.force_login(User.objects.get(username="root"))
    session.cookies["csrftoken"] = secret
    # Multipart, as a browser form sends it; the CSRF check reads the form before the view.
    response = session.post(f"{API}/jobs/", {"topic": "echo", "csrfmiddlewaretoken": secret})
    assert response.status_code == 400 and error_code(response) == "bad_json"
    assert "application/json" in response.json()["error"]["message"]
    response = superuser_api.client.post(f"{API}/jobs/", {"topic": "echo"}, headers=superuser_api.headers)
    assert response.status_code == 400 and error_code(response) == "bad_json"
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/jobs/?status=lost", None),
        ("GET", "/jobs/?page=0", None),
        ("GET", "/jobs/?page=x", None),
        ("GET", "/jobs/?page_size=1000", None),
        ("GET", "/jobs/?colour=red", None),
        ("GET", "/jobs/?topic=Not%20A%20Topic", None),
        ("GET", "/jobs/?entity_id=a%0Ab", None),
        ("POST", "/jobs/{id}/progress", {"progress": 101}),
        ("POST", "/jobs/{id}/progress", {}),
        ("POST", "/jobs/{id}/progress", {"message": 3}),
        ("POST", "/jobs/{id}/cancel", {"reason": 1}),
        ("POST", "/jobs/{id}/requeue", {"reset_attempts": "yes"}),
    ],
)
def test_invalid_parameters_are_400(superuser_api, method, path, body):
    job = make_job("running")
    response = superuser_api.call(method, path.format(id=job.pk), body)
    assert response.status_code == 400 and error_code(response) == "invalid"


def test_nul_characters_are_400(superuser_api):
    # PostgreSQL stores no NUL in text or JSON: refused up front, on every database.
    running = make_job("running")
    for method, path, body in [
        ("POST", "/jobs/", {"topic": "echo", "payload": {"note": "a\x00b"}}),
        ("POST", "/jobs/", {"topic": "echo", "payload": {"a\x00": 1}}),
        ("POST", f"/jobs/{running.pk}/progress", {"message": "\x00"}),
        ("POST", f"/jobs/{running.pk}/cancel", {"reason": "x\x00"}),
    ]:
        response = superuser_api.call(method, path, body)
        assert response.status_code == 400 and error_code(response) == "invalid", (path, body)
    response = superuser_api.get("/jobs/", {"topic": "echo\x00"})
    assert response.status_code == 400 and error_code(response) == "invalid"
    assert Job.objects.count() == 1
    running.refresh_from_db()
    assert running.status == "running" and running.progress_message == ""


def test_unknown_ids_topics_and_endpoints_are_404(superuser_api):
    for path in (
        f"/jobs/{uuid.uuid4()}",
        "/jobs/not-a-uuid",
        "/stats/no-such-topic",
        "/stats/Bad%20Name",
        "/nothing/here",
        "/nothing%0Ahere",
    ):
        response = superuser_api.get(path)
        assert response.status_code == 404 and error_code(response) == "not_found", path
    response = superuser_api.call("POST", f"/jobs/{uuid.uuid4()}/cancel")
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_errors_are_json_before_any_csrf_check():
    # A client without a session or a CSRF cookie (curl, a script) still gets the JSON shape.
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{API}/schema")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    for path in ("/nothing/here", "/jobs/x/y/z"):
        response = client.post(f"{API}{path}", "{}", content_type="application/json")
        assert response.status_code == 404 and error_code(response) == "not_found", path


@pytest.mark.parametrize(
    "status, method, path",
    [
        ("succeeded", "POST", "/jobs/{id}/cancel"),
        ("queued", "POST", "/jobs/{id}/requeue"),
        ("running", "DELETE", "/jobs/{id}"),
        ("queued", "POST", "/jobs/{id}/progress"),
    ],
)
def test_invalid_transitions_are_409(superuser_api, status, method, path):
    job = make_job(status)
    body = {"progress": 5} if path.endswith("progress") else None
    response = superuser_api.call(method, path.format(id=job.pk), body)
    assert response.status_code == 409 and error_code(response) == "invalid_transition"
    job.refresh_from_db()
    assert job.status == status


def test_duplicate_running_entity_is_409(superuser_api):
    job = Job.objects.enqueue("echo", {}, entity_id="e-1")
    Job.objects.filter(pk=job.pk).update(status="running")
    response = superuser_api.call("POST", "/jobs/", {"topic": "echo", "entity_id": "e-1"})
    assert response.status_code == 409 and error_code(response) == "duplicate_job"
    assert response.json()["error"]["details"] == {"existing_id": str(job.pk)}


def test_oversized_body_is_413_before_parsing(superuser_api):
    from django.conf import settings

    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "MAX_PAYLOAD_BYTES": 1000}):
        # Not even JSON: the size is refused before the body is parsed.
        response = superuser_api.call("POST", "/jobs/", raw="x" * (1000 + 17 * 1024))
        assert response.status_code == 413 and error_code(response) == "payload_too_large"
        # Small enough as a request, too large as a payload.
        response = superuser_api.call("POST", "/jobs/", {"topic": "echo", "payload": {"blob": "y" * 2000}})
        assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("PUT", "/jobs/", "GET, POST"),
        ("PATCH", "/jobs/{id}", "DELETE, GET"),
        ("GET", "/jobs/{id}/cancel", "POST"),
        ("POST", "/stats", "GET"),
        ("DELETE", "/health", "GET"),
        ("POST", "/schema", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405(superuser_api, method, path, allowed):
    job = make_job()
    response = superuser_api.call(method, path.format(id=job.pk))
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    assert response["Allow"] == allowed


def test_shell_topic_needs_its_own_permission(staff):
    grant(staff, "add_job")
    api = Api(token_for(staff))
    response = api.call("POST", "/jobs/", {"topic": "shell", "payload": {"command": "true"}})
    assert response.status_code == 403 and "enqueue_shell_job" in response.json()["error"]["message"]
    assert not Job.objects.exists()
    grant(staff, "enqueue_shell_job")
    from django.conf import settings

    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "SHELL_TOPIC": True}):
        response = Api(token_for(staff)).call(
            "POST", "/jobs/", {"topic": "shell", "payload": {"command": "true"}}
        )
    assert response.status_code == 201, response.content
    assert Job.objects.get().topic_id == "shell"


# -- pagination ------------------------------------------------------------------------------------


def test_pagination_and_filters(superuser_api):
    jobs = [make_job("queued") for _ in range(7)]
    make_job("failed", topic="other")
    newest_first = [str(j.pk) for j in reversed(jobs)]

    page1 = superuser_api.get("/jobs/", {"topic": "echo", "page_size": 3}).json()
    assert (page1["count"], page1["num_pages"], page1["page"], page1["page_size"]) == (7, 3, 1, 3)
    assert [j["id"] for j in page1["results"]] == newest_first[:3]
    assert page1["previous"] is None
    page2 = superuser_api.client.get(page1["next"], headers=superuser_api.headers).json()
    assert [j["id"] for j in page2["results"]] == newest_first[3:6]
    page3 = superuser_api.client.get(page2["next"], headers=superuser_api.headers).json()
    assert [j["id"] for j in page3["results"]] == newest_first[6:]
    assert page3["next"] is None and "page=2" in page3["previous"] and "topic=echo" in page3["previous"]

    beyond = superuser_api.get("/jobs/", {"page": 9, "page_size": 3}).json()
    assert beyond["results"] == [] and beyond["next"] is None and beyond["count"] == 8

    failed = superuser_api.get("/jobs/", {"status": "failed"}).json()
    assert [j["topic"] for j in failed["results"]] == ["other"]
    default = superuser_api.get("/jobs/").json()
    assert default["page_size"] == 50 and default["count"] == 8
