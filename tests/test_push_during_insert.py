"""A plain job enqueued in autocommit on PostgreSQL is pushed as soon as its ``INSERT``
is sent (``create.insert_plain``): the statement holds the job's advisory lock until it
commits, and a worker's claim (and a give-back) waits for that lock before it reads the
row. So the wake-up travels while the row is written, a worker never sees the row before
it commits, an ``INSERT`` that fails takes its push back, and a claim that finds the row
still being written gives up after ``fastsql.INSERT_WAIT_MS`` instead of hanging.

Elsewhere (SQLite, or inside a transaction) the push follows the commit, as ever; each
test says what holds there.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psycopg
import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.utils import timezone

from jobqueue import engine
from jobqueue.models import Job, JobStatus, Topic
from jobqueue.transitions import create, fastsql, recovery, spinwait

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"


@pytest.fixture(autouse=True)
def push_script_loaded(redis_client):
    """Redis holds the push script (a test before may have flushed its scripts, as a
    restart does: a push is then answered NOSCRIPT and made again only at the thread's
    next use of Redis, after the INSERT these tests hold)."""
    from jobqueue.engine.scripts import source

    redis_client.script_load(source("push"))


def raw_connection():
    """A psycopg connection of its own to the suite's PostgreSQL test database."""
    s = connection.settings_dict
    return psycopg.connect(host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"],
                           password=s["PASSWORD"] or "", dbname=s["NAME"], autocommit=True)


@contextmanager
def commits_held(topic: str):
    """Hold the row of ``topic`` locked: an ``INSERT`` of a job of that topic runs, then
    waits at its commit (its foreign key's check) until the block ends."""
    Topic.objects.resolve(topic)
    with raw_connection() as blocker:
        with blocker.transaction():
            blocker.execute("SELECT 1 FROM jobqueue_topic WHERE name = %s FOR UPDATE", [topic])
            yield


def in_thread(func, *args):
    """Run ``func`` in a thread (with its own database connection); returns the thread,
    whose ``result`` or ``error`` is set when it ends."""

    def run():
        try:
            thread.result = func(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            thread.error = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.result, thread.error = None, None
    thread.start()
    return thread


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_push_travels_while_the_insert_commits_and_a_claim_waits_for_the_row():
    if not POSTGRES:
        # The push follows the commit: the row is there when it is pushed.
        seen = []
        real = create.push_committed

        def spy(jobs):
            seen.append(Job.objects.filter(pk=jobs[0].pk).exists())
            real(jobs)

        create.push_committed = spy
        try:
            job = Job.objects.enqueue("echo", {"n": 1})
        finally:
            create.push_committed = real
        assert seen == [True] and engine.queue_ids("echo") == [str(job.pk)]
        return
    with commits_held("echo"):
        enqueuing = in_thread(lambda: Job.objects.enqueue("echo", {"n": 1}))
        wait_until(lambda: engine.queue_ids("echo") or enqueuing.error)  # pushed before the row committed
        assert enqueuing.error is None
        [job_id] = engine.queue_ids("echo")
        assert not Job.objects.filter(pk=job_id).exists()
        claiming = in_thread(fastsql.claim_job, job_id, "w", timezone.now())
        time.sleep(0.3)
        assert claiming.is_alive() and enqueuing.is_alive()  # the claim waits for the commit
    enqueuing.join(10)
    claiming.join(10)
    assert enqueuing.error is None and claiming.error is None
    assert str(enqueuing.result.pk) == job_id
    assert claiming.result is not None and claiming.result.status == JobStatus.RUNNING
    assert Job.objects.get(pk=job_id).status == JobStatus.RUNNING


def test_a_statement_run_first_on_its_connection_is_prepared_before_the_push_goes():
    if not POSTGRES:
        assert fastsql.pushing_cursor(connection) is None  # the push follows the commit
        return
    Topic.objects.resolve("echo")
    go, first_done = threading.Event(), threading.Event()

    def enqueue_twice():
        Job.objects.enqueue("echo", {"n": 1})  # a new connection: its INSERT is prepared first
        first_done.set()
        go.wait(10)
        Job.objects.enqueue("echo", {"n": 2})  # prepared: sent at once

    with raw_connection() as blocker:
        with blocker.transaction():
            blocker.execute("LOCK TABLE jobqueue_job IN ACCESS EXCLUSIVE MODE")  # holds the preparation too
            enqueuing = in_thread(enqueue_twice)
            time.sleep(0.3)
            assert engine.queue_ids("echo") == []  # not pushed while only its preparation went
        first_done.wait(10)
        assert len(engine.queue_ids("echo")) == 1
        with blocker.transaction():
            blocker.execute("LOCK TABLE jobqueue_job IN ACCESS EXCLUSIVE MODE")
            go.set()
            wait_until(lambda: len(engine.queue_ids("echo")) == 2)  # pushed while its INSERT waits
    enqueuing.join(10)
    assert enqueuing.error is None
    assert Job.objects.filter(status=JobStatus.QUEUED).count() == 2


@contextmanager
def refused_inserts():
    """A trigger refusing the insert of any job whose payload has a "refuse" key."""
    with connection.cursor() as cursor:
        if POSTGRES:
            cursor.execute("CREATE FUNCTION jq_test_refuse() RETURNS trigger AS $$ BEGIN "
                           "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql")
            cursor.execute("CREATE TRIGGER jq_test_refuse BEFORE INSERT ON jobqueue_job FOR EACH ROW "
                           "WHEN (NEW.payload ? 'refuse') EXECUTE FUNCTION jq_test_refuse()")
        else:
            cursor.execute("CREATE TRIGGER jq_test_refuse BEFORE INSERT ON jobqueue_job "
                           "WHEN json_extract(NEW.payload, '$.refuse') IS NOT NULL "
                           "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER jq_test_refuse" + (" ON jobqueue_job" if POSTGRES else ""))
            if POSTGRES:
                cursor.execute("DROP FUNCTION jq_test_refuse()")


def test_an_insert_that_fails_takes_its_push_back():
    pushed = []
    real = create._push

    def spy(jobs):
        pushed.append(str(jobs[0].pk))
        real(jobs)

    create._push = spy
    try:
        with refused_inserts(), pytest.raises(DatabaseError, match="refused by the test"):
            Job.objects.enqueue("echo", {"refuse": 1})
    finally:
        create._push = real
    # On PostgreSQL the push went out with the INSERT, and was taken back; elsewhere it never went.
    assert len(pushed) == (1 if POSTGRES else 0)
    assert engine.queue_ids("echo") == [] and engine.depths("echo")["queued"] == 0
    assert not Job.objects.exists()
    assert Job.objects.enqueue("echo", {"n": 2}).status == JobStatus.QUEUED  # the connection goes on


def test_a_push_that_fails_is_reported_after_the_insert_and_the_job_is_kept(monkeypatch, caplog):
    import redis

    def unreachable(jobs):
        raise redis.ConnectionError("refused by the test")

    monkeypatch.setattr(create, "_push", unreachable)
    job = Job.objects.enqueue("echo", {"n": 1})
    assert "Redis unavailable for the push of job(s)" in caplog.text and "refused by the test" in caplog.text
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED  # committed: the reconcile pushes it

    def broken(jobs):
        raise RuntimeError("a bug in the push")

    monkeypatch.setattr(create, "_push", broken)
    with pytest.raises(RuntimeError, match="a bug in the push"):
        Job.objects.enqueue("echo", {"n": 2})
    assert Job.objects.count() == 2  # raised once the row was written, as a push after the commit would


def test_inside_a_transaction_the_push_waits_for_its_commit():
    with transaction.atomic():
        job = Job.objects.enqueue("echo", {"n": 1})
        assert engine.queue_ids("echo") == []
    assert engine.queue_ids("echo") == [str(job.pk)]


def test_a_claim_gives_up_on_a_row_still_being_written_after_the_wait(monkeypatch):
    monkeypatch.setattr(fastsql, "INSERT_WAIT_MS", 200)
    monkeypatch.setattr(fastsql, "_INSERT_WAIT", "200")
    job = Job.objects.enqueue("echo", {"n": 1})
    if not POSTGRES:  # nothing to wait for: the claim takes the committed row
        assert fastsql.wait_for_insert(job.pk) is True
        assert fastsql.claim_job(str(job.pk), "w", timezone.now()).status == JobStatus.RUNNING
        return
    with raw_connection() as stuck, stuck.transaction():
        stuck.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(fastsql.lock_keys(job.pk)))  # an INSERT's
        began = time.monotonic()
        assert fastsql.claim_job(str(job.pk), "w", timezone.now()) is None
        assert fastsql.wait_for_insert(job.pk) is False
        assert time.monotonic() - began >= 0.35  # two waits of 0.2 s
    # Nothing was claimed, and the connection is usable: the claim takes the job now.
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert fastsql.claim_job(str(job.pk), "w", timezone.now()).status == JobStatus.RUNNING


def test_only_a_recent_job_s_claim_waits_for_its_insert(monkeypatch):
    import uuid

    from jobqueue.ids import made_at_ms

    waited = []
    real = fastsql._claim_after_insert

    def spy(cursor, job_id, *args):
        waited.append(job_id)
        return real(cursor, job_id, *args)

    monkeypatch.setattr(fastsql, "_claim_after_insert", spy)
    old_ms = int(time.time() * 1000) - fastsql.INSERTED_AFTER_MS - 60_000
    old_id = uuid.UUID(int=old_ms << 80 | 0x7 << 76 | 0b10 << 62 | 12345)  # made over a minute too early
    assert made_at_ms(old_id) == old_ms and made_at_ms(uuid.uuid4()) is None
    old = Job.objects.enqueue("echo", {"n": 1}, job_id=old_id)
    new = Job.objects.enqueue("echo", {"n": 2})
    random = Job.objects.enqueue("echo", {"n": 3}, job_id=uuid.uuid4())  # no time in it: may be new
    for job in (old, new, random):
        assert fastsql.claim_job(str(job.pk), "w", timezone.now()).status == JobStatus.RUNNING
    # A backlog's jobs are claimed as they were; only the others may be in the middle of their INSERT.
    assert waited == ([new.pk, random.pk] if POSTGRES else [])
    if POSTGRES:  # a give-back of a backlog's job does not wait either, even on a lock held
        with raw_connection() as stuck, stuck.transaction():
            stuck.execute("SELECT pg_advisory_xact_lock(%s, %s)", list(fastsql.lock_keys(old_id)))
            assert fastsql.wait_for_insert(old_id) is True


def test_a_give_back_waits_for_a_row_being_written_and_queues_the_job_again():
    if not POSTGRES:
        job = Job.objects.enqueue("echo", {"n": 1})
        assert engine.pop("echo") == [str(job.pk)]
        assert recovery.give_back("echo", str(job.pk)) == "already queued"
        assert engine.queue_ids("echo") == [str(job.pk)]
        return
    with commits_held("echo"):
        enqueuing = in_thread(lambda: Job.objects.enqueue("echo", {"n": 1}))
        wait_until(lambda: engine.queue_ids("echo"))
        [job_id] = engine.pop("echo")  # leased before the row committed, as a worker's batch may be
        giving_back = in_thread(recovery.give_back, "echo", job_id)
        time.sleep(0.3)
        assert giving_back.is_alive()  # waits for the INSERT rather than dropping the job
    giving_back.join(10)
    enqueuing.join(10)
    assert giving_back.error is None and giving_back.result == "already queued"
    assert engine.queue_ids("echo") == [job_id]  # back in its queue, no longer leased
    assert Job.objects.get(pk=job_id).status == JobStatus.QUEUED


def test_a_give_back_looks_again_for_a_row_whose_insert_had_not_run_yet(monkeypatch):
    """A claim can come before the ``INSERT`` of a job pushed as it was sent has even run
    (nothing holds the lock to wait for): the give-back looks for the row again for a
    while, and queues the job once it is there rather than dropping it."""
    monkeypatch.setattr(recovery, "ROW_PAUSES", (0.01, 0.05, 0.25, 1, 4))  # this test's pace, not the machine's
    job, _ = Job.objects.build("echo", {"n": 1})
    engine.push_job(job)  # pushed, its row not written yet
    assert engine.pop("echo") == [str(job.pk)]
    if not POSTGRES:  # the push follows the commit there: a row not there is gone
        assert recovery.give_back("echo", str(job.pk)) == "dropped"
        return
    giving_back = in_thread(recovery.give_back, "echo", str(job.pk))
    time.sleep(0.03)
    assert giving_back.is_alive()
    create.insert(job, "default")  # the INSERT runs only now
    giving_back.join(10)
    assert giving_back.error is None and giving_back.result == "already queued"
    assert engine.queue_ids("echo") == [str(job.pk)]


def test_a_give_back_drops_a_new_job_whose_row_never_comes(monkeypatch):
    waits = []
    real = fastsql.wait_for_insert
    monkeypatch.setattr(fastsql, "wait_for_insert", lambda pk: waits.append(pk) or real(pk))
    job, _ = Job.objects.build("echo", {"n": 1})
    engine.push_job(job)
    assert engine.pop("echo") == [str(job.pk)]
    assert recovery.give_back("echo", str(job.pk)) == "dropped"
    assert engine.queue_ids("echo") == []
    assert not Job.objects.filter(pk=job.pk).exists()
    # On PostgreSQL it looked again after each pause, and then no more; elsewhere once.
    assert waits == [job.pk] * ((1 + len(recovery.ROW_PAUSES)) if POSTGRES else 1)


def test_announcing_calls_back_once_the_statement_is_sent_and_survives_a_failing_call(caplog):
    with suite_postgres() as raw:
        cursor = raw.cursor()
        calls = []
        gen = spinwait.announcing(cursor._execute_gen("SELECT pg_sleep(0.05), 1", None), lambda: calls.append(1))
        raw.wait(gen)
        assert calls == [1] and cursor.fetchone() == ("", 1)

        def fails():
            raise RuntimeError("a push that broke")

        raw.wait(spinwait.announcing(cursor._execute_gen("SELECT 2", None), fails))
        assert cursor.fetchone() == (2,)  # the statement's answer was read all the same
        assert "a push that broke" in caplog.text


@contextmanager
def suite_postgres():
    """The suite's PostgreSQL server, whichever database the suite's Django uses
    (psycopg's generators are PostgreSQL's), as tests/test_spinwait.py uses it."""
    import os

    with psycopg.connect(host=os.environ.get("JOBQUEUE_TEST_PG_HOST", "127.0.0.1"),
                         port=os.environ.get("JOBQUEUE_TEST_PG_PORT", "5432"),
                         user=os.environ.get("JOBQUEUE_TEST_PG_USER", "postgres"),
                         password=os.environ.get("JOBQUEUE_TEST_PG_PASSWORD", ""), dbname="postgres",
                         autocommit=True) as conn:
        yield conn


def test_a_claim_prepares_its_statements_again_where_the_session_lost_them():
    """The enqueue's ``INSERT`` and the claim's two statements are prepared on the connection
    under names of their own; a session that lost them (``DEALLOCATE ALL``, as a pooler's
    reset runs) has them prepared again (the job pushed once all the same), and each
    claim leaves the connection idle."""
    first = Job.objects.enqueue("echo", {"n": 1})
    assert fastsql.claim_job(str(first.pk), "w", timezone.now()).status == JobStatus.RUNNING
    if POSTGRES:
        raw = connection.connection
        assert raw.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'jobqueue%%' ORDER BY name")
            names = {key[0]: name.decode() for key, name in raw._jobqueue_statements.items()}
            assert {"wait_for_insert", "claim", "insert_fresh_job_pushed"} <= set(names)
            assert [name for name, in cursor.fetchall()] == sorted(names.values())
            cursor.execute("DEALLOCATE ALL")
    second = Job.objects.enqueue("echo", {"n": 2})
    claimed = fastsql.claim_job(str(second.pk), "w2", timezone.now())
    assert (claimed.pk, claimed.status, claimed.worker_id, claimed.attempts) == (second.pk, JobStatus.RUNNING, "w2", 1)
    assert claimed.payload == {"n": 2} and claimed.last_execution == 0
    assert Job.objects.get(pk=second.pk).status == JobStatus.RUNNING
    assert engine.queue_ids("echo") == [str(first.pk), str(second.pk)]  # (claimed here, not taken off Redis)
    assert engine.get_redis().hget(engine.topic_keys("echo").metrics, "enqueued") == b"2"  # each pushed once


def test_a_claim_interrupted_while_its_answer_is_awaited_closes_the_connection():
    """An exchange left with answers unread (a signal's exception while the claim waits)
    cannot go back to plain statements: the connection is closed, not handed on unusable."""
    job = Job.objects.enqueue("echo", {"n": 1})
    if not POSTGRES:  # no pipelined claim: the claim is one statement, run to its end
        assert fastsql.claim_job(str(job.pk), "w", timezone.now()).status == JobStatus.RUNNING
        return
    cursor = fastsql._fast_cursor(connection)
    raw = cursor.connection
    params = fastsql._claim_params(job.pk, "w", timezone.now(), connection)
    raw._jobqueue_statements = {}  # the two statements are prepared in this exchange
    exchange = fastsql._pipelined(raw, [
        (*fastsql._prepared(raw, "wait_for_insert", connection.alias), [b"%d" % k for k in fastsql.lock_keys(job.pk)]
         + [b"2000"]),
        (*fastsql._prepared(raw, "claim", connection.alias), [fastsql._as_text(v) for v in params]),
    ])
    next(exchange)  # sent: waiting for the answers
    with pytest.raises(KeyboardInterrupt):
        exchange.throw(KeyboardInterrupt)
    assert raw.closed
    connection.close()  # Django's wrapper connects again on its next use, and claims there
    again = Job.objects.enqueue("echo", {"n": 2})
    assert fastsql.claim_job(str(again.pk), "w", timezone.now()).status == JobStatus.RUNNING
