"""API authentication: hashed bearer tokens, sessions with CSRF, and issuing tokens in the admin."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import override_settings
from django.urls import include, path
from django.utils import timezone
from django.utils.crypto import get_random_string

from jobqueue.admin import ApiTokenAdmin
from jobqueue.models import Job
from jobqueue.models_api import ApiToken

from .test_admin_support import client_for, make_user

pytestmark = pytest.mark.django_db(transaction=True)



def __getattr__(name: str):
    # This module is the URLconf of the admin test: built when asked for, so the admin
    # site's URLs include the token admin registered by the ``token_admin`` fixture.
    if name == "urlpatterns":
        return [path("admin/", admin.site.urls), path("jobs/api/", include("jobqueue.api.urls"))]
    raise AttributeError(name)


@pytest.fixture
def token_admin():
    registered = admin.site.is_registered(ApiToken)
    if not registered:
        admin.site.register(ApiToken, ApiTokenAdmin)
    with override_settings(ROOT_URLCONF=__name__):
        yield
    if not registered:
        admin.site.unregister(ApiToken)


def viewer(**fields) -> User:
    user = User.objects.create_user(get_random_string(8), **fields)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "add_job"]))
    return user


def test_a_token_is_stored_only_as_its_hash():
    token, key = ApiToken.objects.issue(viewer(), name="ci")
    assert key.startswith("jq_") and len(key) > 40
    token.refresh_from_db()
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert token.prefix == key[:8] and key[:8] in str(token)
    stored = [str(getattr(token, f.attname)) for f in ApiToken._meta.concrete_fields]
    assert not any(key in value for value in stored)
    assert ApiToken.objects.authenticate(key) == token
    assert ApiToken.objects.authenticate(key + "x") is None


def test_last_used_is_recorded_but_not_on_every_request():
    token, key = ApiToken.objects.issue(viewer())
    assert token.last_used_at is None
    client = Client(headers={"Authorization": f"Bearer {key}"})
    assert client.get("/jobs/api/jobs/").status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    client.get("/jobs/api/jobs/")
    token.refresh_from_db()
    assert token.last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - dt.timedelta(minutes=5))
    client.get("/jobs/api/jobs/")
    token.refresh_from_db()
    assert token.last_used_at > first


@pytest.mark.parametrize(
    "header",
    ["Bearer jq_not-a-real-key", "Bearer ", "Basic dXNlcjpwdw==", "jq_abc", "Bearer nope"],
)
def test_bad_credentials_are_401(header):
    response = Client(headers={"Authorization": header}).get("/jobs/api/jobs/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert response["WWW-Authenticate"] == 'Bearer realm="jobqueue"'


def test_a_token_stops_working_when_revoked_or_its_user_is_inactive():
    user = viewer()
    token, key = ApiToken.objects.issue(user)
    client = Client(headers={"Authorization": f"Bearer {key}"})
    assert client.get("/jobs/api/jobs/").status_code == 200
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert client.get("/jobs/api/jobs/").status_code == 401
    User.objects.filter(pk=user.pk).update(is_active=True)
    token.delete()
    assert client.get("/jobs/api/jobs/").status_code == 401


def test_a_token_has_exactly_its_users_permissions():
    user = User.objects.create_user("reader")
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    key = ApiToken.objects.issue(user)[1]
    client = Client(headers={"Authorization": f"Bearer {key}"})
    assert client.get("/jobs/api/jobs/").status_code == 200
    response = client.post("/jobs/api/jobs/", {"topic": "echo"}, content_type="application/json")
    assert response.status_code == 403


# -- sessions --------------------------------------------------------------------------------


def test_a_session_needs_csrf_for_unsafe_methods():
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer())
    assert client.get("/jobs/api/jobs/").status_code == 200

    response = client.post("/jobs/api/jobs/", {"topic": "echo"}, content_type="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"
    assert not Job.objects.exists()

    secret = get_random_string(32)
    client.cookies["csrftoken"] = secret
    response = client.post(
        "/jobs/api/jobs/", {"topic": "echo"}, content_type="application/json", headers={"X-CSRFToken": secret}
    )
    assert response.status_code == 201, response.content


def test_a_bearer_token_needs_no_csrf():
    key = ApiToken.objects.issue(viewer())[1]
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {key}"})
    response = client.post("/jobs/api/jobs/", {"topic": "echo"}, content_type="application/json")
    assert response.status_code == 201


def test_an_anonymous_session_is_401():
    response = Client().get("/jobs/api/stats")
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


# -- the admin -------------------------------------------------------------------------------


def test_the_admin_issues_a_token_and_shows_its_key_once(token_admin):
    owner = User.objects.create_user("owner")
    admin_user = User.objects.create_superuser("admin", "admin@example.com", None)
    client = Client()
    client.force_login(admin_user)

    response = client.post("/admin/jobqueue/apitoken/add/", {"name": "deploy bot", "user": owner.pk})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = re.search(r"<code[^>]*>(jq_[\w-]+)</code>", response.content.decode()).group(1)
    token = ApiToken.objects.get()
    assert (token.name, token.user) == ("deploy bot", owner)
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()

    change = client.get(f"/admin/jobqueue/apitoken/{token.pk}/change/").content.decode()
    assert key not in change and token.prefix in change
    listing = client.get("/admin/jobqueue/apitoken/").content.decode()
    assert key not in listing

    # The key works, as the token's user.
    owner.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert Client(headers={"Authorization": f"Bearer {key}"}).get("/jobs/api/jobs/").status_code == 200


def test_a_staff_user_issues_tokens_for_themselves_and_sees_only_theirs():
    clerk = make_user("clerk", "jobqueue.add_apitoken", "jobqueue.view_apitoken", "jobqueue.delete_apitoken")
    client = client_for(clerk)
    response = client.post("/admin/jobqueue/apitoken/add/", {"name": "mine", "user": clerk.pk})
    assert response.status_code == 200 and "jq_" in response.content.decode()
    mine = ApiToken.objects.get()
    theirs, _ = ApiToken.objects.issue(make_user("other"), name="theirs")

    listing = client.get("/admin/jobqueue/apitoken/")
    assert list(listing.context["cl"].result_list) == [mine]
    assert client.get(f"/admin/jobqueue/apitoken/{theirs.pk}/change/").status_code == 302  # "does not exist"
    response = client.post("/admin/jobqueue/apitoken/", {
        "action": "delete_selected", "_selected_action": [theirs.pk, mine.pk], "post": "yes"})
    assert response.status_code == 302
    assert list(ApiToken.objects.all()) == [theirs]

    # With the permission to issue for others, every token is listed (and can be revoked).
    keeper = make_user("keeper", "jobqueue.view_apitoken", "jobqueue.issue_token_for_others")
    assert list(client_for(keeper).get("/admin/jobqueue/apitoken/").context["cl"].result_list) == [theirs]
    # The add form proposes the issuer as the token's user.
    assert client.get("/admin/jobqueue/apitoken/add/").context["adminform"].form["user"].value() == clerk.pk
