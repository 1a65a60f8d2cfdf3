"""System checks: each misconfiguration of ``JOBQUEUE`` is reported with its id and a hint."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.core import checks
from django.test.utils import override_settings

from jobqueue.checks import check_settings


def jobqueue_checks(**values):
    with override_settings(JOBQUEUE={**django_settings.JOBQUEUE, **values}):
        return check_settings()


def ids(messages):
    return sorted(m.id for m in messages)


@pytest.mark.django_db  # Django 6.1's model checks ask the database about JSON support
def test_the_test_settings_pass_every_check():
    assert check_settings() == []
    assert [m for m in checks.run_checks() if m.id.startswith("jobqueue.")] == []


def test_checks_are_registered_with_django():
    with override_settings(JOBQUEUE={"NO_SUCH_SETTING": 1}):
        assert "jobqueue.E002" in ids(checks.run_checks(tags=["jobqueue"]))


def test_no_jobqueue_setting_at_all_is_fine():
    with override_settings(JOBQUEUE=None):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("values", "expected", "mentions"),
    [
        ({"LEASE_TIME": 5}, "jobqueue.E002", "LEASE_TIME"),
        ({"REDIS_URL": "http://localhost:6379"}, "jobqueue.E003", "http://localhost:6379"),
        ({"REDIS_URL": 6379}, "jobqueue.E003", "6379"),
        ({"CACHE_ALIAS": "nowhere"}, "jobqueue.E004", "nowhere"),
        ({"CACHE_ALIAS": ["default"]}, "jobqueue.E004", "default"),
        ({"CACHE_ALIAS": "locmem"}, "jobqueue.E005", "locmem"),
        ({"LEASE_SECONDS": 0}, "jobqueue.E006", "LEASE_SECONDS"),
        ({"MAX_PAYLOAD_BYTES": -1}, "jobqueue.E006", "MAX_PAYLOAD_BYTES"),
        ({"DEFAULT_TIMEOUT": "300"}, "jobqueue.E006", "DEFAULT_TIMEOUT"),
        ({"ENTITY_ID_MAX_LENGTH": True}, "jobqueue.E006", "ENTITY_ID_MAX_LENGTH"),
        ({"RECONCILE_SECONDS": 0}, "jobqueue.E006", "RECONCILE_SECONDS"),
        ({"RECONCILE_SECONDS": "15"}, "jobqueue.E006", "RECONCILE_SECONDS"),
        ({"MAX_PAYLOAD_DEPTH": 0}, "jobqueue.E010", "MAX_PAYLOAD_DEPTH"),
        ({"MAX_PAYLOAD_DEPTH": 2.5}, "jobqueue.E010", "MAX_PAYLOAD_DEPTH"),
        ({"MAX_PAYLOAD_DEPTH": 5000}, "jobqueue.E010", "MAX_PAYLOAD_DEPTH"),
        ({"WORKER_PREFETCH": 0}, "jobqueue.E011", "WORKER_PREFETCH"),
        ({"WORKER_PREFETCH": 2.5}, "jobqueue.E011", "WORKER_PREFETCH"),
        ({"WORKER_PREFETCH": "8"}, "jobqueue.E011", "WORKER_PREFETCH"),
        ({"SPIN_WAIT_MICROSECONDS": -1}, "jobqueue.E012", "SPIN_WAIT_MICROSECONDS"),
        ({"SPIN_WAIT_MICROSECONDS": True}, "jobqueue.E012", "SPIN_WAIT_MICROSECONDS"),
        ({"SPIN_WAIT_MICROSECONDS": "500"}, "jobqueue.E012", "SPIN_WAIT_MICROSECONDS"),
        ({"SPIN_WAIT_MICROSECONDS": 2_000_000}, "jobqueue.E012", "SPIN_WAIT_MICROSECONDS"),
        ({"PREFIX": ""}, "jobqueue.E007", "PREFIX"),
        ({"PREFIX": "jq{x}"}, "jobqueue.E007", "PREFIX"),
        ({"PREFIX": "my jq"}, "jobqueue.E007", "PREFIX"),
        ({"PREFIX": 7}, "jobqueue.E007", "PREFIX"),
        ({"DEFAULT_ISOLATION": "thread"}, "jobqueue.E008", "DEFAULT_ISOLATION"),
        ({"PREPARED_STATEMENTS": "false"}, "jobqueue.E009", "PREPARED_STATEMENTS"),
        ({"WORKER_SYNCHRONOUS_COMMIT": 0}, "jobqueue.E009", "WORKER_SYNCHRONOUS_COMMIT"),
        ({"ALLOW_UNREGISTERED_TOPICS": "yes"}, "jobqueue.E009", "ALLOW_UNREGISTERED_TOPICS"),
        ({"HEARTBEAT_SECONDS": 8, "LEASE_SECONDS": 10}, "jobqueue.W001", "HEARTBEAT_SECONDS"),
        ({"HEARTBEAT_SECONDS": 20, "LEASE_SECONDS": 60, "LOCK_TTL_SECONDS": 30}, "jobqueue.W001", "LOCK_TTL"),
        ({"SHELL_TOPIC": True}, "jobqueue.W002", "SHELL_TOPIC"),
    ],
)
def test_each_misconfiguration_is_reported_with_a_hint(values, expected, mentions):
    messages = jobqueue_checks(**values)
    assert ids(messages) == [expected]
    (message,) = messages
    assert mentions in message.msg
    assert message.hint
    assert isinstance(message, checks.Warning if expected.startswith("jobqueue.W") else checks.Error)


def test_spin_wait_may_be_off_or_any_budget_up_to_a_second():
    for value in (0, 0.0, 250, 1000.5, 1_000_000):
        assert jobqueue_checks(SPIN_WAIT_MICROSECONDS=value) == [], value


def test_a_setting_that_is_not_a_dict():
    with override_settings(JOBQUEUE=["PREFIX", "jq"]):
        (message,) = check_settings()
    assert message.id == "jobqueue.E001" and message.hint


def test_a_redis_url_replaces_the_cache_alias_check():
    assert jobqueue_checks(CACHE_ALIAS="locmem", REDIS_URL="redis://127.0.0.1:6379/0") == []
    assert jobqueue_checks(REDIS_URL="unix:///run/redis.sock") == []
    assert jobqueue_checks(REDIS_URL="redis+cluster://10.0.0.1:7000,10.0.0.2:7000") == []


def test_djangos_own_redis_cache_is_accepted():
    plain = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": django_settings.REDIS_URL}
    caches = {**django_settings.CACHES, "plain": plain}
    with override_settings(CACHES=caches):
        assert jobqueue_checks(CACHE_ALIAS="plain") == []


def test_several_problems_are_all_reported():
    messages = jobqueue_checks(LEASE_SECONDS=-5, PREFIX="a b", UNKNOWN=1)
    assert ids(messages) == ["jobqueue.E002", "jobqueue.E006", "jobqueue.E007"]
