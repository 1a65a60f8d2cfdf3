"""The API against its own OpenAPI document: schemathesis sends generated requests
(valid and invalid) to every operation through the WSGI app, and every response must
be documented (status code, content type, body schema, headers)."""

from __future__ import annotations

import re
import zlib

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from jobqueue import engine
from jobqueue.api.schema import TOPIC_PATTERN, build_schema
from jobqueue.exceptions import InvalidJob
from jobqueue.models import Job
from jobqueue.models_api import ApiToken
from jobqueue.validation import validate_topic_name

pytestmark = pytest.mark.django_db(transaction=True)

STATUSES = ("queued", "running", "failed", "succeeded", "cancelled")


@pytest.fixture(autouse=True)
def _localhost():
    # The WSGI test client of schemathesis sends "Host: localhost".
    with override_settings(ALLOWED_HOSTS=["localhost", "testserver"]):
        yield


@pytest.fixture
def fuzz_state():
    """A superuser's token, and one job in each state for the generated ids to point at."""
    user = User.objects.create_superuser("fuzz", "fuzz@example.com", None)
    key = ApiToken.objects.issue(user, name="fuzz")[1]
    jobs = {}
    for status in STATUSES:
        job = Job.objects.enqueue("echo", {"n": 1})
        if status != "queued":
            Job.objects.filter(pk=job.pk).update(status=status, started_at=timezone.now(), attempts=1)
            engine.remove("echo", str(job.pk))
        jobs[status] = job
    state = {"headers": {"Authorization": f"Bearer {key}"}, "jobs": jobs, "statuses": []}
    yield state
    # The fuzzing reached the operation's success path, not only its errors.
    assert any(200 <= status < 300 for status in state["statuses"]), sorted(set(state["statuses"]))


# The document the view serves (test_schema_is_public... checks they are the same), loaded
# without a request: collection runs before the test settings allow any host.
schema = schemathesis.openapi.from_dict(build_schema("/jobs/api/"))
schema.app = get_wsgi_application()


#: The job state in which each operation on one job can succeed.
SUCCEEDS_ON = {"progress": "running", "cancel": "queued", "requeue": "failed", "DELETE": "succeeded"}


def point_at_real_data(case, state) -> None:
    """Turn most valid generated requests towards existing data, so success
    responses are exercised too, not only 404s and 400s (picked from the generated
    values, so a failing example replays the same way)."""
    params = case.path_parameters or {}
    if isinstance(params.get("job_id"), str):
        pick = zlib.crc32(f"{params['job_id']}{case.body!r}{case.query!r}".encode("utf-8", "replace"))
        if pick % 4:
            action = case.operation.path.rsplit("/", 1)[-1]
            status = SUCCEEDS_ON.get(action) or SUCCEEDS_ON.get(case.method.upper())
            if status is None or pick % 4 == 1:
                status = STATUSES[pick // 4 % len(STATUSES)]
            params["job_id"] = str(state["jobs"][status].pk)
    if isinstance(params.get("topic"), str) and zlib.crc32(params["topic"].encode()) % 2:
        params["topic"] = "echo"
    body = case.body
    if (
        case.operation.label == "POST /jobs/"
        and isinstance(body, dict)
        and isinstance(body.get("topic"), str)
    ):
        if zlib.crc32(body["topic"].encode()) % 2:
            body["topic"] = "echo"
            if "parent" in body:
                body["parent"] = str(state["jobs"]["running"].pk)
            if "depends_on" in body:
                body["depends_on"] = [str(state["jobs"]["succeeded"].pk)] if body["depends_on"] else []


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_matches_the_schema(case, fuzz_state):
    if case.meta is not None and case.meta.generation.mode.is_positive:
        point_at_real_data(case, fuzz_state)
    excluded = []
    if case.operation.label == "POST /jobs/":
        # Whether a well-formed job can be created depends on state no schema can state:
        # the topic must exist, so must the parent and dependencies (400 otherwise).
        excluded.append(positive_data_acceptance)
    response = case.call_and_validate(headers=fuzz_state["headers"], excluded_checks=excluded)
    fuzz_state["statuses"].append(response.status_code)


def test_schema_is_public_and_names_every_route():
    response = Client().get("/jobs/api/schema")
    assert response.status_code == 200
    document = response.json()
    assert document == build_schema("/jobs/api/")
    assert document["servers"] == [{"url": "/jobs/api"}]
    assert set(document["paths"]) == {
        "/jobs/",
        "/jobs/{job_id}",
        "/jobs/{job_id}/progress",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/requeue",
        "/stats",
        "/stats/{topic}",
        "/health",
    }


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="az09_.-", min_size=1, max_size=12) | st.from_regex(TOPIC_PATTERN, fullmatch=True))
def test_the_schema_topic_pattern_accepts_exactly_the_valid_names(name):
    try:
        validate_topic_name(name)
        valid = True
    except InvalidJob:
        valid = False
    assert valid == (re.match(TOPIC_PATTERN, name) is not None and len(name) <= 100)
