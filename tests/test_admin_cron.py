"""The topic admin shows when a cron topic runs next."""

import datetime as dt

import pytest
from django.contrib.auth.models import User

from jobqueue.cron import next_run
from jobqueue.models import Topic


@pytest.mark.django_db
def test_topic_list_and_page_show_the_next_cron_run(client):
    topic = Topic.objects.create(name="nightly", cron="30 2 * * *")
    Topic.objects.create(name="plain")
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    expected = next_run(topic)
    assert expected is not None and (expected.hour, expected.minute) == (2, 30)
    assert expected - dt.datetime.now(expected.tzinfo) <= dt.timedelta(days=1)

    listing = client.get("/admin/jobqueue/topic/").content.decode()
    assert "next cron run" in listing.lower()
    assert 'title="30 2 * * *"' in listing

    page = client.get(f"/admin/jobqueue/topic/{topic.pk}/change/").content.decode()
    assert 'title="30 2 * * *"' in page
