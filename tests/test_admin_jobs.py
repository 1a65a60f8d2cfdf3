"""The job admin: change list, filters, search, bounded counts, actions, detail page, add form."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from django.db import connection
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobqueue import engine
from jobqueue.admin.changelist import BoundedPaginator
from jobqueue.admin.jobs import JobAdmin
from jobqueue.models import Execution, Job
from jobqueue.transitions import bulk

from .test_admin_support import (
    JOB_CHANGELIST,
    action,
    confirm,
    messages_of,
    set_status,
    superuser_client,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def root():
    return superuser_client()


def listed(client, query: str = "") -> set[str]:
    response = client.get(JOB_CHANGELIST + query)
    assert response.status_code == 200
    return {str(job.pk) for job in response.context["cl"].result_list}


# -- change list ----------------------------------------------------------------------


def test_columns_and_newest_first(root):
    old = Job.objects.enqueue("echo", {"n": 1}, entity_id="img-1")
    new = Job.objects.enqueue("other", {"n": 2})
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    set_status(
        new, "running", progress=40, progress_message="resizing", stage="render", worker_id="w-7", attempts=1
    )

    html = root.get(JOB_CHANGELIST).content.decode()

    assert html.index(new.short_id) < html.index(old.short_id)
    assert 'class="jq-badge jq-badge-running"' in html and 'class="jq-badge jq-badge-queued"' in html
    assert '<progress max="100" value="40"' in html
    assert "render · resizing" in html
    assert "img-1" in html and "w-7" in html and "1 / 3" in html


def test_filters(root):
    parent = Job.objects.enqueue("echo", {})
    child = Job.objects.enqueue("echo", {}, parent=parent)
    failed = set_status(Job.objects.enqueue("other", {}), "failed")

    assert listed(root, "?status__exact=failed") == {str(failed.pk)}
    assert listed(root, "?topic__name__exact=other") == {str(failed.pk)}
    assert listed(root, "?has_parent=yes") == {str(child.pk)}
    assert listed(root, "?has_parent=no") == {str(parent.pk), str(failed.pk)}


def test_search_by_id_entity_and_payload(root):
    a = Job.objects.enqueue("echo", {"colour": "turquoise"}, entity_id="ent-a")
    b = Job.objects.enqueue("echo", {"colour": "red"}, entity_id="ent-b")

    assert listed(root, "?q=turquoise") == {str(a.pk)}
    assert listed(root, "?q=ent-b") == {str(b.pk)}
    assert listed(root, f"?q={a.short_id}") == {str(a.pk)}
    assert listed(root, f"?q={b.pk}") == {str(b.pk)}
    assert listed(root, "?q=payload:ent-a") == set()  # scoped to the payload
    assert listed(root, "?q=entity:turquoise") == set()


def test_a_list_shows_the_ends_of_ids_and_searching_one_finds_its_job(root, monkeypatch):
    """Ids made in the same minute start alike (version 7: the time first): lists show
    their last characters, and searching those finds the job among the newest listed."""
    a = Job.objects.enqueue("echo", {}, job_id=uuid.UUID("01a2425e-17ba-7aaa-8aaa-aaaaaaaaaaaa"))
    b = Job.objects.enqueue("echo", {}, job_id=uuid.UUID("01a2425e-17bb-7bbb-9bbb-bbbbbbbb1234"))
    assert (a.short_id, b.short_id, str(a)) == ("aaaaaaaa", "bbbb1234", "echo:aaaaaaaa")
    html = root.get(JOB_CHANGELIST).content.decode()
    assert '<span class="jq-mono">aaaaaaaa</span>' in html and '<span class="jq-mono">bbbb1234</span>' in html

    assert listed(root, "?q=bbbb1234") == {str(b.pk)}
    assert listed(root, "?q=id:b1234") == {str(b.pk)}
    assert listed(root, "?q=01a2425e") == {str(a.pk), str(b.pk)}  # the start: the time they were made
    assert listed(root, "?q=01a2425e17bb") == {str(b.pk)}

    # Read among the newest jobs only, as payload text is; a whole id is found everywhere.
    monkeypatch.setattr(JobAdmin, "payload_search_rows", 1)
    then = timezone.now() - dt.timedelta(days=400)
    Job.objects.filter(pk=a.pk).update(created_at=then)
    response = root.get(JOB_CHANGELIST + "?q=aaaaaaaa")
    assert {str(job.pk) for job in response.context["cl"].result_list} == set()
    (note,) = messages_of(response)
    assert "ends of job ids" in note and "newest 1 jobs" in note
    assert listed(root, f"?q={a.pk}") == {str(a.pk)}
    assert listed(root, f"?q=aaaaaaaa&created_at__year={timezone.localtime(then).year}") == {str(a.pk)}


def test_payload_search_reads_the_newest_jobs_and_says_when_it_left_older_ones_out(root, monkeypatch):
    monkeypatch.setattr(JobAdmin, "payload_search_rows", 3)
    now = timezone.now()
    jobs = []
    for n in range(5):  # the first is the oldest
        job = Job.objects.enqueue("echo", {"colour": "turquoise"}, entity_id=f"ent-{n}")
        Job.objects.filter(pk=job.pk).update(created_at=now - dt.timedelta(days=400 * (5 - n)))
        jobs.append(str(job.pk))

    response = root.get(JOB_CHANGELIST + "?q=turquoise")
    assert {str(job.pk) for job in response.context["cl"].result_list} == set(jobs[2:])
    (note,) = messages_of(response)
    assert "newest 3 jobs" in note and "Narrow the list by date" in note
    # What has an index is still searched everywhere.
    assert listed(root, "?q=ent-0") == {jobs[0]}
    # Narrowed by date, the payload of older jobs is searched.
    oldest_year = timezone.localtime(now - dt.timedelta(days=2000)).year
    assert listed(root, f"?q=payload:turquoise&created_at__year={oldest_year}") == {jobs[0]}
    # Nothing left out: no note.
    response = root.get(JOB_CHANGELIST + f"?q=turquoise&created_at__year={oldest_year}")
    assert messages_of(response) == []


def test_payload_search_reads_no_more_than_its_rows(root, monkeypatch):
    """Every read of the jobs table in a payload search is an index range (no scan of
    every row's payload), whatever the size of the table."""
    monkeypatch.setattr(JobAdmin, "payload_search_rows", 3)
    Job.objects.enqueue_many([("echo", {"colour": "red", "n": n}) for n in range(6)])
    with CaptureQueriesContext(connection) as queries:
        assert listed(root, "?q=turquoise") == set()
    reads = [q["sql"] for q in queries.captured_queries if "LIKE" in q["sql"] and '"payload"' in q["sql"]]
    assert reads and all('"created_at" >' in sql for sql in reads), reads
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
            try:
                for sql in reads:
                    cursor.execute("EXPLAIN " + sql)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                    assert "Seq Scan" not in plan and "Index Cond: (created_at >" in plan, plan
            finally:
                cursor.execute("RESET enable_seqscan")


def test_date_hierarchy_lists_the_range(root):
    job = Job.objects.enqueue("echo", {})
    Job.objects.enqueue("echo", {})
    year = timezone.localtime(job.created_at).year
    Job.objects.filter(pk=job.pk).update(created_at=job.created_at.replace(year=year - 2))

    html = root.get(JOB_CHANGELIST).content.decode()
    assert all(f"created_at__year={y}" in html for y in (year - 2, year - 1, year))
    assert listed(root, f"?created_at__year={year - 2}") == {str(job.pk)}


def test_count_is_bounded(root, monkeypatch):
    monkeypatch.setattr(BoundedPaginator, "limit", 5)
    Job.objects.enqueue_many([("echo", {"i": i}) for i in range(8)])

    with CaptureQueriesContext(connection) as queries:
        html = root.get(JOB_CHANGELIST + "?status__exact=queued").content.decode()

    assert "5+ jobs" in html
    counts = [
        q["sql"]
        for q in queries.captured_queries
        if "COUNT(" in q["sql"].upper() and "jobqueue_job" in q["sql"]
    ]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts


def test_unfiltered_count_is_the_planner_estimate_on_postgresql(root, monkeypatch):
    monkeypatch.setattr(BoundedPaginator, "limit", 5)
    Job.objects.enqueue_many([("echo", {"i": i}) for i in range(12)])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE jobqueue_job")
        expected = "≈ 12 jobs"
    else:
        expected = "5+ jobs"  # no estimate elsewhere: the bounded count
    assert expected in root.get(JOB_CHANGELIST).content.decode()


# -- actions --------------------------------------------------------------------------


def test_cancel_action(root):
    queued = Job.objects.enqueue("echo", {})
    running = set_status(Job.objects.enqueue("echo", {}), "running")
    done = set_status(Job.objects.enqueue("echo", {}), "succeeded")
    assert str(queued.pk) in engine.queue_ids("echo")

    response = action(root, "cancel_jobs", [queued, running, done], follow=True)

    assert "Cancelled 1 job." in messages_of(response)
    assert "Asked 1 running job to stop." in messages_of(response)
    queued.refresh_from_db()
    assert queued.status == "cancelled" and "cancelled by root" in queued.error
    assert str(queued.pk) not in engine.queue_ids("echo")
    running.refresh_from_db()
    assert running.status == "running" and engine.abort_requested("echo", str(running.pk))
    done.refresh_from_db()
    assert done.status == "succeeded"


def test_requeue_action(root):
    failed = Job.objects.enqueue("echo", {})
    engine.remove("echo", str(failed.pk))
    set_status(failed, "failed", attempts=2, error="boom")
    queued = Job.objects.enqueue("echo", {})

    response = action(root, "requeue_jobs", [failed, queued], follow=True)

    assert "Requeued 1 job." in messages_of(response)
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.error) == ("queued", 0, "")
    assert engine.queue_ids("echo") == [str(queued.pk), str(failed.pk)]


def test_requeue_skips_a_job_whose_entity_is_active_again(root):
    old = set_status(Job.objects.enqueue("echo", {}, entity_id="e-1"), "failed")
    newer = Job.objects.enqueue("echo", {}, entity_id="e-1")
    other = set_status(Job.objects.enqueue("echo", {}), "cancelled")

    response = action(root, "requeue_jobs", [old, other], follow=True)

    assert "Requeued 1 job." in messages_of(response)
    assert any("left alone" in m for m in messages_of(response))
    old.refresh_from_db()
    other.refresh_from_db()
    assert (old.status, other.status) == ("failed", "queued")
    assert Job.objects.get(pk=newer.pk).status == "queued"


def test_change_priority_action_has_an_intermediate_form(root):
    first = Job.objects.enqueue("echo", {})
    second = Job.objects.enqueue("echo", {})

    page = action(root, "change_priority", [second])
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="priority"' in html and f'value="{second.pk}"' in html

    bad = confirm(root, "change_priority", [second], apply="1", priority="500")
    assert bad.status_code == 200 and bad.context["form"].errors
    assert Job.objects.get(pk=second.pk).priority == 0

    response = confirm(root, "change_priority", [second], apply="1", priority="50", follow=True)
    assert "Set the priority of 1 pending job to 50." in messages_of(response)
    assert Job.objects.get(pk=second.pk).priority == 50
    assert engine.queue_ids("echo") == [str(second.pk), str(first.pk)]


def test_run_now_action(root):
    scheduled = Job.objects.enqueue("echo", {}, delay=3600)
    assert scheduled.status == "scheduled" and engine.queue_ids("echo") == []

    response = action(root, "run_now", [scheduled], follow=True)

    assert "Queued 1 scheduled job now." in messages_of(response)
    assert Job.objects.get(pk=scheduled.pk).status == "queued"
    assert engine.queue_ids("echo") == [str(scheduled.pk)]


def test_delete_action_asks_then_deletes_all_but_running_jobs(root):
    queued = Job.objects.enqueue("echo", {})
    running = set_status(Job.objects.enqueue("echo", {}), "running")
    failed = set_status(Job.objects.enqueue("echo", {}), "failed")
    Execution.objects.create(job=failed, attempt=1, outcome="failed")

    page = action(root, "delete_jobs", [queued, running, failed])
    assert page.status_code == 200 and "Delete the 3 selected jobs" in page.content.decode()
    assert Job.objects.count() == 3

    response = confirm(root, "delete_jobs", [queued, running, failed], post="yes", follow=True)

    assert "Deleted 2 jobs." in messages_of(response)
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]
    assert not Execution.objects.exists()
    assert str(queued.pk) not in engine.queue_ids("echo")


def test_select_across_changes_every_match_a_chunk_at_a_time(root, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_SIZE", 7)
    jobs = Job.objects.enqueue_many([("echo", {"i": i}) for i in range(40)])
    others = Job.objects.enqueue_many([("other", {}) for _ in range(3)])

    with CaptureQueriesContext(connection) as queries:
        action(
            root, "cancel_jobs", jobs[:2], url=JOB_CHANGELIST + "?topic__name__exact=echo", select_across=True
        )

    assert Job.objects.filter(topic_id="echo", status="cancelled").count() == 40
    assert all(Job.objects.get(pk=j.pk).status == "queued" for j in others)
    assert engine.queue_ids("echo") == []
    updates = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("UPDATE") and "jobqueue_job" in q["sql"]
    ]
    assert len(updates) == 6  # ceil(40 / 7)
    selects = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and 'FROM "jobqueue_job"' in q["sql"] and "COUNT(" not in q["sql"]
    ]
    # Every logged read of job rows is bounded: a chunk (LIMIT) or the ids of one chunk (IN). On
    # PostgreSQL the selection itself streams through a server-side cursor (which is not logged).
    assert all(re.search(r"LIMIT \d+|IN \(", sql) for sql in selects), selects


def test_select_across_requeue_builds_no_model_instances(root, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_SIZE", 10)
    jobs = Job.objects.enqueue_many([("echo", {"i": i}) for i in range(25)])
    Job.objects.filter(topic_id="echo").update(status="failed")
    built = []

    def count(sender, instance, **kwargs):
        built.append(1)

    post_init.connect(count, sender=Job)
    try:
        action(
            root, "requeue_jobs", jobs[:1], url=JOB_CHANGELIST + "?status__exact=failed", select_across=True
        )
    finally:
        post_init.disconnect(count, sender=Job)

    assert built == []
    assert Job.objects.filter(status="queued").count() == 25
    assert len(engine.queue_ids("echo")) == 25
