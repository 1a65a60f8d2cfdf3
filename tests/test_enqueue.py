"""``Job.objects.enqueue()`` and ``enqueue_many()``: rows in the caller's transaction,
ids in Redis only once it commits, bad input refused before anything is written."""

from __future__ import annotations

import datetime as dt
import math
import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobqueue import engine
from jobqueue.exceptions import DuplicateJob, InvalidJob, InvalidPayload, PayloadTooLarge, UnknownTopic
from jobqueue.managers import JobManager
from jobqueue.models import Job, JobStatus
from jobqueue.resync import resync
from jobqueue.signals import job_enqueued
from tests.states import force

# Real commits, so on-commit pushes run as in production. Tests that need no commit are
# marked plain django_db instead: flushing the database after each test is slow.
from .workerutil import jobqueue_settings, nested, redis_keys

pytestmark = pytest.mark.django_db(transaction=True)


def ids(jobs):
    return [str(job.pk) for job in jobs]


def scheduled_ids(topic):
    return [i.decode() for i in engine.get_redis().zrange(engine.TopicKeys(topic).scheduled, 0, -1)]


# -- transactions ---------------------------------------------------------------------


def test_a_committed_enqueue_is_in_redis():
    job = Job.objects.enqueue("echo", {"x": 1}, priority=3)
    job.refresh_from_db()
    assert (job.status, job.priority, job.payload, job.queued_at is not None) == ("queued", 3, {"x": 1}, True)
    assert job.max_attempts == 2 and job.timeout == 30  # the handler's defaults
    assert engine.queue_ids("echo") == [str(job.pk)]


def test_the_push_waits_for_the_commit():
    with transaction.atomic():
        job = Job.objects.enqueue("echo", {})
        with_entity = Job.objects.enqueue("echo", {}, entity_id="e")
        assert engine.queue_ids("echo") == []
    assert engine.queue_ids("echo") == [str(job.pk), str(with_entity.pk)]


def test_a_rollback_leaves_no_row_and_nothing_in_redis(redis_client):
    with pytest.raises(RuntimeError), transaction.atomic():
        Job.objects.enqueue("echo", {"n": 1})
        Job.objects.enqueue("echo", {"n": 2}, entity_id="rolled-back", delay=60)
        Job.objects.enqueue_many([("other", {}), ("echo", {})])
        raise RuntimeError("the caller's transaction fails")
    assert Job.objects.count() == 0
    assert redis_keys(redis_client) == []


def test_redis_down_at_commit_keeps_the_job_and_resync_pushes_it(caplog):
    with jobqueue_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        engine.reset_clients()
        job = Job.objects.enqueue("echo", {"while": "down"})
        [scheduled] = Job.objects.enqueue_many([{"topic": "echo", "delay": 3600}])
    assert "Redis unavailable" in caplog.text
    # The log says which jobs wait for a worker to push them, and how soon.
    assert f"job(s) {job.pk} (" in caplog.text and f"job(s) {scheduled.pk} (" in caplog.text
    assert "a worker pushes them within about 15 s (a scheduled job once it is due)" in caplog.text
    engine.reset_clients()
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert Job.objects.get(pk=scheduled.pk).status == JobStatus.SCHEDULED
    assert engine.queue_ids("echo") == []
    report = resync(["echo"])
    assert report.pushed == {"echo": 1} and report.scheduled == {"echo": 1}
    assert engine.queue_ids("echo") == [str(job.pk)]
    assert scheduled_ids("echo") == [str(scheduled.pk)]


def test_job_enqueued_is_sent_for_each_job():
    seen = []

    def receiver(sender, job, **kwargs):
        seen.append(job.pk)

    job_enqueued.connect(receiver)
    try:
        one = Job.objects.enqueue("echo")
        many = Job.objects.enqueue_many([("echo", {}), ("other", {})])
    finally:
        job_enqueued.disconnect(receiver)
    assert seen == [one.pk, *[j.pk for j in many]]


# -- bad input ------------------------------------------------------------------------

FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
NO_SUCH_JOB = "00000000-0000-4000-8000-000000000000"
BAD_INPUT = [
    pytest.param(("echo", object()), {}, InvalidPayload, id="object-payload"),
    pytest.param(("echo", {"s": {1, 2}}), {}, InvalidPayload, id="set-payload"),
    pytest.param(("echo", {"x": math.nan}), {}, InvalidPayload, id="nan-payload"),
    pytest.param(("echo", [math.inf]), {}, InvalidPayload, id="inf-payload"),
    pytest.param(("echo", {"b": b"bytes"}), {}, InvalidPayload, id="bytes-payload"),
    pytest.param(("echo", nested(101)), {}, InvalidPayload, id="payload-too-deep"),
    pytest.param(("echo", nested(10_000)), {}, InvalidPayload, id="payload-deeper-than-json-goes"),
    pytest.param(("echo", {}), {"priority": 101}, InvalidJob, id="priority-high"),
    pytest.param(("echo", {}), {"priority": -101}, InvalidJob, id="priority-low"),
    pytest.param(("echo", {}), {"priority": True}, InvalidJob, id="priority-bool"),
    pytest.param(("echo", {}), {"priority": "5"}, InvalidJob, id="priority-str"),
    pytest.param(("echo", {}), {"priority": 1.5}, InvalidJob, id="priority-float"),
    pytest.param(("echo", {}), {"entity_id": "x" * 256}, InvalidJob, id="entity-long"),
    pytest.param(("echo", {}), {"entity_id": ""}, InvalidJob, id="entity-empty"),
    pytest.param(("echo", {}), {"entity_id": "a\nb"}, InvalidJob, id="entity-newline"),
    pytest.param(("echo", {}), {"entity_id": "a\x00b"}, InvalidJob, id="entity-nul"),
    pytest.param(("echo", {}), {"entity_id": "a\x7fb"}, InvalidJob, id="entity-del"),
    pytest.param(("echo", {}), {"entity_id": "a\x85b"}, InvalidJob, id="entity-c1"),
    pytest.param(("echo", {}), {"entity_id": "a\u2028b"}, InvalidJob, id="entity-line-separator"),
    pytest.param(("echo", {}), {"entity_id": 42}, InvalidJob, id="entity-int"),
    pytest.param(("echo", {}), {"run_after": dt.datetime(2030, 1, 1)}, InvalidJob, id="naive-run-after"),
    pytest.param(("echo", {}), {"run_after": "2030-01-01"}, InvalidJob, id="str-run-after"),
    pytest.param(("echo", {}), {"run_after": FUTURE, "delay": 5}, InvalidJob, id="run-after-and-delay"),
    pytest.param(("echo", {}), {"delay": -1}, InvalidJob, id="negative-delay"),
    pytest.param(("echo", {}), {"delay": dt.timedelta(seconds=-1)}, InvalidJob, id="negative-timedelta"),
    pytest.param(("echo", {}), {"delay": math.nan}, InvalidJob, id="nan-delay"),
    pytest.param(("echo", {}), {"delay": "5"}, InvalidJob, id="str-delay"),
    pytest.param(("echo", {}), {"delay": math.inf}, InvalidJob, id="infinite-delay"),
    pytest.param(("echo", {}), {"delay": 1e12}, InvalidJob, id="huge-delay"),
    pytest.param(("echo", {}), {"delay": dt.timedelta.max}, InvalidJob, id="max-timedelta"),
    pytest.param(("echo", {}), {"max_attempts": 0}, InvalidJob, id="zero-attempts"),
    pytest.param(("echo", {}), {"timeout": -5}, InvalidJob, id="negative-timeout"),
    pytest.param(("echo", {}), {"parent": "not-a-uuid"}, InvalidJob, id="bad-parent"),
    pytest.param(("echo", {}), {"parent": NO_SUCH_JOB}, InvalidJob, id="missing-parent"),
    pytest.param(("echo", {}), {"depends_on": ["not-a-uuid"]}, InvalidJob, id="bad-dependency"),
    pytest.param(("echo", {}), {"depends_on": [NO_SUCH_JOB]}, InvalidJob, id="missing-dependency"),
    pytest.param(("../x", {}), {}, InvalidJob, id="topic-dotdot"),
    pytest.param(("a b", {}), {}, InvalidJob, id="topic-space"),
    pytest.param(("A", {}), {}, InvalidJob, id="topic-upper"),
    pytest.param(("\u0435cho", {}), {}, InvalidJob, id="topic-cyrillic"),
    pytest.param(("echo\n", {}), {}, InvalidJob, id="topic-newline"),
    pytest.param(("ec\x00ho", {}), {}, InvalidJob, id="topic-nul"),
    pytest.param(("", {}), {}, InvalidJob, id="topic-empty"),
    pytest.param(("-echo", {}), {}, InvalidJob, id="topic-dash-first"),
    pytest.param(("x" * 101, {}), {}, InvalidJob, id="topic-long"),
    pytest.param(("echo/x", {}), {}, InvalidJob, id="topic-slash"),
    pytest.param(("{echo}", {}), {}, InvalidJob, id="topic-braces"),
    pytest.param((None, {}), {}, InvalidJob, id="topic-none"),
]


# Not transactional (many cases, each flush is slow): on-commit callbacks run as if committed.
@pytest.mark.django_db
@pytest.mark.parametrize(("args", "kwargs", "error"), BAD_INPUT)
def test_bad_input_is_refused_and_writes_nothing(args, kwargs, error, redis_client,
                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(error):
            Job.objects.enqueue(*args, **kwargs)
        with pytest.raises(error):
            Job.objects.enqueue_many([("echo", {}), {"topic": args[0], "payload": args[1], **kwargs}])
    assert Job.objects.count() == 0
    assert redis_keys(redis_client) == []


@pytest.mark.django_db
def test_an_unknown_topic_lists_the_known_ones(redis_client):
    with pytest.raises(UnknownTopic) as info:
        Job.objects.enqueue("no-such-topic", {})
    assert "no-such-topic" in str(info.value)
    assert "echo" in str(info.value) and "stage1" in str(info.value)
    assert Job.objects.count() == 0 and redis_keys(redis_client) == []


@pytest.mark.django_db
def test_payload_size_is_bounded_by_the_setting(redis_client):
    with jobqueue_settings(MAX_PAYLOAD_BYTES=50):
        Job.objects.enqueue("echo", {"s": "x" * 30})
        with pytest.raises(PayloadTooLarge, match="50"):
            Job.objects.enqueue("echo", {"s": "x" * 60})
        # Size is counted in bytes of UTF-8, not in characters.
        with pytest.raises(PayloadTooLarge):
            Job.objects.enqueue("echo", {"s": "\u00e9" * 25})
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_new_job_ids_are_version_7_uuids_in_time_order():
    """A new job's id starts with the time it was made (ms), so later ids sort after
    earlier ones, in Python and in the database; the rest is random."""
    import time
    import uuid

    from jobqueue.ids import new_job_id

    before = time.time_ns() // 1_000_000
    first = Job.objects.enqueue("echo", {})
    time.sleep(0.002)
    second = Job.objects.enqueue("echo", {})
    after = time.time_ns() // 1_000_000
    for job in (first, second):
        assert job.pk.version == 7 and job.pk.variant == uuid.RFC_4122
        assert before <= job.pk.int >> 80 <= after
    assert first.pk < second.pk and str(first.pk) < str(second.pk)
    assert list(Job.objects.order_by("pk").values_list("pk", flat=True)) == [first.pk, second.pk]
    made = [new_job_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert len({u.int & ((1 << 62) - 1) for u in made}) == len(made)  # the random bits vary
    fixed = uuid.uuid4()
    assert Job.objects.enqueue("echo", {}, job_id=fixed).pk == fixed  # the caller's id is kept


@pytest.mark.django_db
def test_a_setting_changed_after_it_was_read_is_seen_at_once():
    """The settings are kept once read, and read again when Django says they changed."""
    from jobqueue.conf import settings as jq_settings

    Job.objects.enqueue("echo", {"s": "x" * 60})  # read with the default limit
    assert jq_settings.MAX_PAYLOAD_BYTES > 60
    with jobqueue_settings(MAX_PAYLOAD_BYTES=50):
        assert jq_settings.MAX_PAYLOAD_BYTES == 50
        with pytest.raises(PayloadTooLarge, match="50"):
            Job.objects.enqueue("echo", {"s": "x" * 60})
    Job.objects.enqueue("echo", {"s": "x" * 60})
    assert Job.objects.count() == 2


def test_a_setting_once_read_is_an_attribute_until_the_settings_change():
    """A read setting is kept on the settings object itself (reading it again calls
    nothing); a change drops them all, and an unknown name is still refused."""
    from jobqueue.conf import settings as jq_settings

    default = jq_settings.LEASE_SECONDS
    assert vars(jq_settings)["LEASE_SECONDS"] == default and vars(jq_settings)["PREFIX"] == jq_settings.PREFIX
    with jobqueue_settings(LEASE_SECONDS=default + 7):
        assert "LEASE_SECONDS" not in vars(jq_settings)  # dropped as the settings changed
        assert jq_settings.LEASE_SECONDS == default + 7 and vars(jq_settings)["LEASE_SECONDS"] == default + 7
    assert jq_settings.LEASE_SECONDS == default
    with pytest.raises(AttributeError, match="Unknown jobqueue setting: NO_SUCH_SETTING"):
        jq_settings.NO_SUCH_SETTING  # noqa: B018


PAYLOADS = [
    {"text": "caf\u00e9 \u65e5\u672c \U0001f600", "escapes": "quote \" backslash \\ tab \t line\u2028end"},
    {"nested": [{"a": [1, 2.5, -3e-7, None, True, False]}, {"b": {"c": "d"}}], "big": 2**62, "empty": {}},
    [1, "two", [3]],
    "just text",
    12.5,
]


@pytest.mark.parametrize("logged", [False, True], ids=["fast cursor", "Django's cursor (queries logged)"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_payload_is_stored_as_given(payload, logged):
    """The row holds the payload JSON build() made and checked (sent as it is, not
    made again), whichever cursor sends it: read back, it is the payload given."""
    if logged:
        with CaptureQueriesContext(connection) as queries:
            job = Job.objects.enqueue("echo", payload)
        assert any("INSERT" in q["sql"] for q in queries.captured_queries)
    else:
        job = Job.objects.enqueue("echo", payload)
    assert Job.objects.get(pk=job.pk).payload == payload
    assert job.payload == payload


@pytest.mark.django_db
def test_payload_depth_is_bounded_by_the_setting():
    assert Job.objects.enqueue("echo", nested(100)).payload == nested(100)  # the default limit
    with jobqueue_settings(MAX_PAYLOAD_DEPTH=3):
        Job.objects.enqueue("echo", {"a": [{"b": 1}]})
        with pytest.raises(InvalidPayload, match="limit is 3"):
            Job.objects.enqueue("echo", {"a": [{"b": []}]})
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_payload_depth_counts_nesting_not_brackets_in_text():
    """Only text with more brackets than the limit is walked; brackets in strings are no nesting."""
    from jobqueue import validation

    walked = []
    real = validation.check_payload_depth

    def spy(payload):
        walked.append(payload)
        return real(payload)

    with jobqueue_settings(MAX_PAYLOAD_DEPTH=3), pytest.MonkeyPatch.context() as mp:
        mp.setattr(validation, "check_payload_depth", spy)
        Job.objects.enqueue("echo", {"a": [{"b": 1}]})  # three brackets: not walked
        assert walked == []
        brackets = {"text": "[[[[{{{{", "list": [1, 2]}
        assert Job.objects.enqueue("echo", brackets).payload == brackets  # walked, and shallow
        assert walked == [brackets]
        with pytest.raises(InvalidPayload, match="limit is 3"):
            Job.objects.enqueue("echo", {"a": [{"b": []}]})
        cycle: list = []
        cycle.append(cycle)
        with pytest.raises(InvalidPayload, match="limit is 3"):
            Job.objects.enqueue("echo", {"a": cycle})
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_entity_id_length_follows_the_setting():
    with jobqueue_settings(ENTITY_ID_MAX_LENGTH=8):
        Job.objects.enqueue("echo", entity_id="12345678")
        with pytest.raises(InvalidJob, match="limit is 8"):
            Job.objects.enqueue("echo", entity_id="123456789")


@pytest.mark.django_db
@pytest.mark.parametrize("item", [{"payload": {}}, "echo", ("echo",), ("echo", {}, 5), 42, None])
def test_a_bad_enqueue_many_item_is_reported(item, redis_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(InvalidJob, match="topic"):
        Job.objects.enqueue_many([("echo", {}), item])
    assert Job.objects.count() == 0
    assert redis_keys(redis_client) == []


@pytest.mark.django_db
def test_a_dependency_named_twice_is_one_dependency():
    first = Job.objects.enqueue("echo")
    job = Job.objects.enqueue("echo", depends_on=[first, str(first.pk), first.pk])
    assert list(job.depends_on.values_list("pk", flat=True)) == [first.pk]
    assert job.status == "waiting"


# -- scheduling -----------------------------------------------------------------------


def test_delay_and_run_after_schedule_the_job(redis_client):
    before = timezone.now()
    delayed = Job.objects.enqueue("echo", delay=120)
    when = timezone.now() + dt.timedelta(hours=1)
    later = Job.objects.enqueue("echo", run_after=when, priority=4, entity_id="later")
    past = Job.objects.enqueue("echo", run_after=timezone.now() - dt.timedelta(seconds=5))
    for job in (delayed, later):
        job.refresh_from_db()
        assert job.status == JobStatus.SCHEDULED and job.queued_at is None
    assert before + dt.timedelta(seconds=119) < delayed.run_after < timezone.now() + dt.timedelta(seconds=121)
    assert sorted(scheduled_ids("echo")) == sorted(ids([delayed, later]))
    k = engine.TopicKeys("echo")
    assert redis_client.zscore(k.scheduled, str(later.pk)) == int(when.timestamp() * 1000)
    assert redis_client.hget(k.schedprio, str(later.pk)) == b"4"
    # A run_after in the past queues at once.
    assert Job.objects.get(pk=past.pk).status == JobStatus.QUEUED
    assert engine.queue_ids("echo") == [str(past.pk)]
    # When due, the scheduled job is promoted with its priority.
    assert engine.promote_due("echo", now_ms=int(when.timestamp() * 1000) + 1) == sorted(
        ids([delayed, later]), key=lambda i: i != str(delayed.pk)
    )
    assert engine.queue_ids("echo") == [str(later.pk), str(past.pk), str(delayed.pk)]


@pytest.mark.django_db
def test_an_aware_run_after_in_another_zone_is_the_same_instant():
    tz = dt.timezone(dt.timedelta(hours=-7))
    when = (timezone.now() + dt.timedelta(minutes=5)).astimezone(tz)
    job = Job.objects.enqueue("echo", run_after=when)
    job.refresh_from_db()
    assert job.run_after == when


# -- entity dedupe --------------------------------------------------------------------


def test_same_entity_while_queued_returns_the_job_and_raises_its_priority():
    first = Job.objects.enqueue("echo", {"v": 1}, entity_id="img-1")
    other = Job.objects.enqueue("echo", priority=3)
    assert engine.queue_ids("echo") == ids([other, first])
    again = Job.objects.enqueue("echo", {"v": 2}, entity_id="img-1", priority=5)
    assert again.pk == first.pk
    assert Job.objects.get(pk=first.pk).priority == 5
    assert engine.queue_ids("echo") == ids([first, other])  # the Redis order changed too
    lower = Job.objects.enqueue("echo", entity_id="img-1", priority=-10)
    assert lower.pk == first.pk
    assert Job.objects.get(pk=first.pk).priority == 5  # never lowered
    assert Job.objects.get(pk=first.pk).payload == {"v": 1}  # the first payload stays
    assert Job.objects.count() == 2
    assert engine.queue_ids("echo") == ids([first, other])


def test_same_entity_while_scheduled_returns_the_scheduled_job(redis_client):
    first = Job.objects.enqueue("echo", entity_id="e", delay=600)
    again = Job.objects.enqueue("echo", entity_id="e", priority=9)
    assert again.pk == first.pk
    assert Job.objects.get(pk=first.pk).status == JobStatus.SCHEDULED
    assert redis_client.hget(engine.TopicKeys("echo").schedprio, str(first.pk)) == b"9"


def test_same_entity_while_running_is_refused():
    first = Job.objects.enqueue("echo", entity_id="e")
    assert force(first, (JobStatus.QUEUED,), status=JobStatus.RUNNING)
    with pytest.raises(DuplicateJob) as info:
        Job.objects.enqueue("echo", entity_id="e", priority=50)
    assert info.value.existing_id == first.pk
    assert "e" in str(info.value) and str(first.pk) in str(info.value)
    assert Job.objects.count() == 1


def test_same_entity_after_the_job_finished_is_a_new_job():
    first = Job.objects.enqueue("echo", entity_id="e")
    assert force(first, (JobStatus.QUEUED,), status=JobStatus.SUCCEEDED)
    second = Job.objects.enqueue("echo", entity_id="e")
    assert second.pk != first.pk
    assert engine.queue_ids("echo") == ids([first, second])  # the finished id is the worker's to ack
    assert Job.objects.filter(entity_id="e").count() == 2


@pytest.mark.django_db
def test_entities_are_per_topic():
    a = Job.objects.enqueue("echo", entity_id="e")
    b = Job.objects.enqueue("other", entity_id="e")
    assert a.pk != b.pk


def test_a_concurrent_insert_of_the_same_entity_is_merged(monkeypatch):
    """Another process inserted the entity's job between our lookup and our INSERT:
    the unique constraint refuses ours and the other job is returned."""
    real_lookup = JobManager._active_for_entity
    calls = []

    def lookup_missing_the_racing_row(self, job):
        calls.append(job.entity_id)
        if len(calls) == 1:
            # The racing insert, committed by "someone else" right after our lookup missed it.
            Job.objects.create(topic_id="echo", entity_id=job.entity_id, status=JobStatus.QUEUED, priority=1)
            return None
        return real_lookup(self, job)

    monkeypatch.setattr(JobManager, "_active_for_entity", lookup_missing_the_racing_row)
    job = Job.objects.enqueue("echo", {}, entity_id="raced", priority=7)
    assert len(calls) == 2  # the second lookup came from the IntegrityError path
    row = Job.objects.get(entity_id="raced")
    assert job.pk == row.pk
    assert row.priority == 7
    assert Job.objects.count() == 1


def test_enqueues_of_one_entity_racing_in_threads_make_one_job():
    plain = Job.objects.enqueue("echo", priority=-1)  # the topic row exists before the race
    barrier = threading.Barrier(6)
    results, errors = [], []

    def enqueue(priority):
        try:
            barrier.wait(timeout=30)
            results.append(Job.objects.enqueue("echo", {}, entity_id="race", priority=priority).pk)
        except Exception as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue, args=(p,)) for p in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 6 and len(set(results)) == 1
    job = Job.objects.get(entity_id="race")
    assert job.priority == 5  # the highest asked for, whoever won the insert
    assert engine.queue_ids("echo") == ids([job, plain])


# -- enqueue_many ---------------------------------------------------------------------


def test_enqueue_many_inserts_in_bulk_and_pushes_in_order():
    items = [{"topic": "echo", "payload": {"i": i}} for i in range(60)]
    with CaptureQueriesContext(connection) as queries:
        jobs = Job.objects.enqueue_many(items)
    inserts = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert 1 <= len(inserts) <= 3  # one bulk insert (SQLite may split it by its variable limit)
    assert len(queries.captured_queries) <= 8
    assert engine.queue_ids("echo") == ids(jobs)
    assert [j.payload["i"] for j in Job.objects.filter(status="queued").in_queue_order()] == list(range(60))


def test_enqueue_many_of_thousands_stays_a_few_statements():
    with CaptureQueriesContext(connection) as queries:
        jobs = Job.objects.enqueue_many([("other", {"i": i}) for i in range(1500)])
    assert len(queries.captured_queries) < 60
    assert Job.objects.filter(topic_id="other").count() == 1500
    assert engine.queue_ids("other") == ids(jobs)


def test_enqueue_many_mixes_topics_priorities_schedules_and_entities():
    jobs = Job.objects.enqueue_many(
        [
            ("echo", {"n": 0}),
            {"topic": "echo", "payload": {"n": 1}, "priority": 9},
            {"topic": "other", "payload": {"n": 2}},
            {"topic": "echo", "payload": {"n": 3}, "delay": 3600},
            {"topic": "echo", "payload": {"n": 4}, "entity_id": "dup"},
            {"topic": "echo", "payload": {"n": 5}, "entity_id": "dup", "priority": 2},
            {"topic": "prio"},
        ]
    )
    assert len(jobs) == 7
    assert [j.payload.get("n") for j in jobs] == [0, 1, 2, 3, 4, 4, None]  # the order of the items
    assert jobs[4].pk == jobs[5].pk  # deduplicated within the batch
    assert Job.objects.count() == 6
    assert Job.objects.get(pk=jobs[4].pk).priority == 2
    assert Job.objects.get(pk=jobs[6].pk).priority == 5  # the topic's default priority
    assert engine.queue_ids("echo") == ids([jobs[1], jobs[4], jobs[0]])
    assert engine.queue_ids("other") == ids([jobs[2]])
    assert scheduled_ids("echo") == ids([jobs[3]])


@pytest.mark.django_db
def test_enqueue_many_of_nothing():
    assert Job.objects.enqueue_many([]) == []


# -- prefixes -------------------------------------------------------------------------


def test_two_prefixes_never_see_each_others_jobs():
    with jobqueue_settings(PREFIX="site-a"):
        a = Job.objects.enqueue("echo", entity_id="shared")
    with jobqueue_settings(PREFIX="site-b"):
        assert engine.queue_ids("echo") == []
        assert engine.pop("echo") == []
        assert engine.depths("echo")["queued"] == 0
        b = Job.objects.enqueue("other")
        assert engine.queue_ids("other") == [str(b.pk)]
    with jobqueue_settings(PREFIX="site-a"):
        assert engine.queue_ids("echo") == [str(a.pk)]
        assert engine.queue_ids("other") == []
        assert engine.known_topics() == ["echo"]
