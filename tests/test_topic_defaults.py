"""New topics take their defaults from JOBQUEUE's DEFAULT_* settings; a handler's options win."""

import pytest
from django.test import override_settings

from jobqueue import registry
from jobqueue.models import Job, Topic

SETTINGS = {
    "CACHE_ALIAS": "default",
    "DEFAULT_MAX_ATTEMPTS": 7,
    "DEFAULT_TIMEOUT": 42,
    "DEFAULT_ISOLATION": "process",
    "DEFAULT_RETRY_BACKOFF": 0.5,
}


@pytest.fixture
def fresh_handler():
    registry.register("defaults-probe", lambda job: None, timeout=9)
    yield "defaults-probe"
    registry.unregister("defaults-probe")


@pytest.mark.django_db
def test_a_registered_topic_takes_setting_defaults_under_its_own_options(settings, fresh_handler):
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, **SETTINGS}):
        topic = Topic.objects.sync(registry.get(fresh_handler))
    assert (topic.max_attempts, topic.isolation, topic.retry_backoff) == (7, "process", 0.5)
    assert topic.timeout == 9  # the handler's option, not DEFAULT_TIMEOUT


@pytest.mark.django_db
def test_an_unregistered_topic_takes_setting_defaults(settings):
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, **SETTINGS, "ALLOW_UNREGISTERED_TOPICS": True}):
        job = Job.objects.enqueue("free-form", {"a": 1})
    topic = Topic.objects.get(name="free-form")
    assert (topic.max_attempts, topic.timeout, topic.isolation) == (7, 42, "process")
    assert (job.max_attempts, job.timeout) == (7, 42)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 2**31}, {"timeout": 2**40}, {"max_attempts": 0}, {"timeout": -1}],
)
def test_values_a_column_cannot_hold_are_refused(kwargs):
    from jobqueue.exceptions import InvalidJob

    with pytest.raises(InvalidJob):
        Job.objects.enqueue("echo", {}, **kwargs)
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_run_after_is_stored_in_utc_whatever_its_offset():
    import datetime as dt

    far = dt.timezone(dt.timedelta(hours=23, minutes=30))
    when = dt.datetime(2099, 1, 1, 12, 0, tzinfo=far)
    job = Job.objects.enqueue("echo", {}, run_after=when)
    job.refresh_from_db()
    assert job.run_after == when and job.status == "scheduled"
