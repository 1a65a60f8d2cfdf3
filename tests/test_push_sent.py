"""A new job's push is sent without waiting for Redis's answer (``jobqueue/engine/sending.py``):
the answer is read before the thread's next Redis call, a push the answer says did not
happen is made again, a refused one is logged, and no pooled connection is left with an
answer unread (end of request, end of thread, fork)."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import redis
from django.db import connection as db_connection
from django.db import transaction
from django.test import override_settings

from jobqueue import engine
from jobqueue.conf import settings as jq_settings
from jobqueue.engine import connection, sending
from jobqueue.engine import queue as engine_queue
from jobqueue.engine import reconcile as engine_reconcile
from jobqueue.models import Job, JobStatus

from .test_api import superuser_api  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = db_connection.vendor == "postgresql"


def held():
    return getattr(sending._local, "held", None)


def kill_clients_of_this_database(client) -> None:
    """Close, from Redis's side, every connection to the suite's Redis database but ``client``'s
    own: not the whole server's, which other test runs may share on other databases."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    mine = client.client_id()
    ids = [c["id"] for c in client.client_list() if int(c["db"]) == db and int(c["id"]) != mine]
    assert ids  # the held connection is one of them
    for i in ids:
        client.client_kill_filter(_id=i)


def enqueue_after_commit(topic, **kwargs):
    """``enqueue()`` whose push follows the commit (as on SQLite, or in a transaction): its
    answer is left unread when the call returns (in autocommit on PostgreSQL the push goes
    out during the ``INSERT`` and its answer is read as the call ends)."""
    with transaction.atomic():
        return Job.objects.enqueue(topic, **kwargs)


def unread(job):
    """As if ``job``'s push had just been sent and its answer were still to read."""
    held().sent = ("echo", str(job.pk), 0, None, lambda: engine.push_job(job, "enqueued=1"))
    connection.waiting.read = sending.settle


def test_a_push_after_the_commit_returns_with_its_answer_unread_and_the_thread_then_sees_it():
    job = enqueue_after_commit("echo")
    assert held() is not None and held().sent is not None and held().sent[1] == str(job.pk)
    assert engine.queue_ids("echo") == [str(job.pk)]  # get_redis() read the answer first
    assert held().sent is None
    assert engine.get_redis().hget(engine.TopicKeys("echo").metrics, "enqueued") == b"1"


@contextmanager
def commit_held_until_queued(redis_client, topic: str, queued: int):
    """On PostgreSQL, hold the commit of the next ``INSERT`` of a ``topic`` job (its foreign
    key's check waits for the topic's row, locked by another connection) until ``queued``
    ids are in the topic's queue, and a moment more: the push sent during that ``INSERT``
    has then been answered before the statement ends, however loaded the machine is."""
    from .test_push_during_insert import raw_connection

    locked, done = threading.Event(), threading.Event()
    key = engine.TopicKeys(topic).queue

    def hold():
        with raw_connection() as blocker, blocker.transaction():
            blocker.execute("SELECT 1 FROM jobqueue_topic WHERE name = %s FOR UPDATE", [topic])
            locked.set()
            deadline = time.monotonic() + 10
            while redis_client.zcard(key) < queued and time.monotonic() < deadline and not done.is_set():
                time.sleep(0.01)
            time.sleep(0.1)  # the answer on its way back to the enqueuing thread

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def test_an_enqueue_reads_its_push_answer_as_it_ends_once_it_has_come(redis_client, monkeypatch):
    """In autocommit on PostgreSQL the push goes out during the ``INSERT``: its answer,
    come by the statement's end, is read then, not before the thread's next ``INSERT``.
    Elsewhere the push follows the commit and its answer is left for the next Redis use."""
    Job.objects.enqueue("echo")
    engine.get_redis()  # the held connection exists, nothing outstanding
    if POSTGRES:
        with commit_held_until_queued(redis_client, "echo", 2):
            job = Job.objects.enqueue("echo")
    else:
        job = Job.objects.enqueue("echo")
    if POSTGRES:
        assert held().sent is None  # read as the call ended
    else:
        assert held().sent is not None and held().sent[1] == str(job.pk)
    assert engine.queue_ids("echo")[-1] == str(job.pk)


def test_an_answer_not_come_by_the_insert_s_end_is_not_waited_for(redis_client):
    Job.objects.enqueue("echo")
    engine.get_redis()
    redis_client.client_pause(300, all=False)  # Redis runs no write (the push script) for a while
    job = Job.objects.enqueue("echo")
    assert held().sent is not None and held().sent[1] == str(job.pk)  # left for the next use of Redis
    second = Job.objects.enqueue("echo")  # reads the first answer before its own INSERT
    assert engine.queue_ids("echo")[-2:] == [str(job.pk), str(second.pk)]
    assert held().sent is None


def test_each_push_reads_the_answer_before_it(redis_client):
    jobs = [enqueue_after_commit("echo", priority=p) for p in (0, 5, 1)]
    assert held().sent[1] == str(jobs[-1].pk)  # only the last answer is outstanding
    assert engine.queue_ids("echo") == [str(jobs[1].pk), str(jobs[2].pk), str(jobs[0].pk)]


def test_a_push_sent_after_redis_lost_its_scripts_is_made_again(redis_client):
    Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    redis_client.script_flush()  # as after a restart: the answer to EVALSHA is NOSCRIPT
    job = Job.objects.enqueue("echo")
    assert str(job.pk) in engine.queue_ids("echo")
    assert engine.get_redis().hget(engine.TopicKeys("echo").metrics, "enqueued") == b"2"


def test_a_push_on_a_connection_redis_closed_is_made_again(redis_client, caplog):
    first = Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    kill_clients_of_this_database(redis_client)  # the held connection among them
    with caplog.at_level(logging.WARNING, logger="jobqueue"):
        job = Job.objects.enqueue("echo")
        assert engine.queue_ids("echo") == [str(first.pk), str(job.pk)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_answer_lost_with_its_connection_never_requeues_a_job_a_worker_took(redis_client, monkeypatch, caplog):
    job = Job.objects.enqueue("echo")
    conn = held().conn
    assert redis_client.zscore(engine.TopicKeys("echo").queue, str(job.pk)) is not None  # Redis ran the push
    assert engine.pop("echo") == [str(job.pk)]  # a worker leased it (engine.pop read the answer first)
    unread(job)
    lease = redis_client.zscore(engine.TopicKeys("echo").leases, str(job.pk))

    def broken(*args, **kwargs):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(conn, "read_response", broken)  # the answer is lost with the connection
    with caplog.at_level(logging.WARNING, logger="jobqueue"):
        assert engine.queue_ids("echo") == []  # not queued again behind the worker's back
    assert redis_client.zscore(engine.TopicKeys("echo").leases, str(job.pk)) == lease
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_push_whose_answer_was_lost_before_it_ran_is_put_back(redis_client, monkeypatch):
    job = Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    redis_client.delete(engine.TopicKeys("echo").queue)  # as if the push never ran
    unread(job)
    monkeypatch.setattr(held().conn, "read_response", lambda *a, **k: (_ for _ in ()).throw(redis.ConnectionError()))
    assert engine.queue_ids("echo") == [str(job.pk)]
    assert held().sent is None


def test_a_refused_push_is_logged_and_the_job_kept(redis_client, caplog):
    redis_client.set(engine.TopicKeys("echo").queue, "not a sorted set")
    with caplog.at_level(logging.WARNING, logger="jobqueue"):
        job = Job.objects.enqueue("echo")
        engine.get_redis()
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(job.pk) in record.getMessage() and "WRONGTYPE" in record.getMessage()
    assert record.job_id == str(job.pk) and record.topic == "echo"
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    redis_client.delete(engine.TopicKeys("echo").queue)
    engine.push_job(Job.objects.get(pk=job.pk))  # what the reconcile does for it
    assert engine.queue_ids("echo") == [str(job.pk)]


def test_a_request_ends_with_its_answer_read_and_the_connection_back_in_the_pool(superuser_api):  # noqa: F811
    response = superuser_api.call("POST", "/jobs/", {"topic": "echo"})
    assert response.status_code == 201, response.content
    assert held() is None  # request_finished gave it back
    pool = engine.get_redis().connection_pool
    assert not pool._in_use_connections
    assert engine.queue_ids("echo") == [response.json()["id"]]


def test_a_thread_that_ends_with_an_answer_unread_gives_its_connection_back_closed():
    pool = engine.get_redis().connection_pool
    seen = {}

    def enqueue():
        seen["job"] = enqueue_after_commit("echo")
        seen["conn"] = held().conn
        assert held().sent is not None
        from django.db import connections

        connections.close_all()

    thread = threading.Thread(target=enqueue)
    thread.start()
    thread.join()
    gc.collect()
    assert seen["conn"] not in pool._in_use_connections
    assert seen["conn"] in pool._available_connections
    assert seen["conn"]._sock is None  # closed: its answer can never be read as another call's
    assert engine.queue_ids("echo") == [str(seen["job"].pk)]


def test_a_forked_child_pushes_on_its_own_connection_and_the_parent_reads_its_answer():
    parent_job = enqueue_after_commit("echo")
    assert held().sent is not None
    child_id = str(uuid.uuid4())
    pid = os.fork()
    if pid == 0:  # the child: no database, only the engine
        code = 1
        try:
            engine.reset_clients()
            engine.send_job(SimpleNamespace(pk=child_id, topic_id="echo", status="queued", priority=0,
                                            entity_id=None, key=None))
            code = 0 if child_id in engine.queue_ids("echo") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert held().sent is not None and held().sent[1] == str(parent_job.pk)  # the parent's, still unread
    assert sorted(engine.queue_ids("echo")) == sorted([str(parent_job.pk), child_id])


# -- the answer read while the INSERT commits (spinwait's meanwhile) ----------------------


@contextmanager
def slow_inserts(seconds=0.1):
    """Each job row's INSERT takes ``seconds`` longer (PostgreSQL: a trigger), and an enqueue
    polls for its answer that long (its push's answer comes meanwhile). Nothing elsewhere."""
    if not POSTGRES:
        yield
        return
    table = Job._meta.db_table
    with db_connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION jq_test_slow_insert() RETURNS trigger AS $$ BEGIN "
                       f"PERFORM pg_sleep({float(seconds)}); RETURN NEW; END $$ LANGUAGE plpgsql")
        cursor.execute(f"CREATE TRIGGER jq_test_slow_insert BEFORE INSERT ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION jq_test_slow_insert()")
    try:
        with override_settings(JOBQUEUE={**jq_settings.user_settings(), "SPIN_WAIT_MICROSECONDS": 1_000_000}):
            yield
    finally:
        with db_connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER jq_test_slow_insert ON {table}")
            cursor.execute("DROP FUNCTION jq_test_slow_insert()")


def statement_running() -> bool:
    """Whether this thread's database connection has a statement running (PostgreSQL)."""
    import psycopg

    return db_connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE


def calls_noted(monkeypatch, module, name) -> list[bool]:
    """For each call of ``module.name`` (still made), whether a statement was running then."""
    noted: list[bool] = []
    real = getattr(module, name)

    def noting(*args, **kwargs):
        noted.append(POSTGRES and statement_running())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, noting)
    return noted


def test_an_enqueue_reads_its_push_answer_while_its_insert_commits(redis_client, monkeypatch):
    Job.objects.enqueue("echo")
    engine.get_redis()
    # Not read after the statement: only a read while it ran leaves nothing outstanding.
    monkeypatch.setattr(type(held().conn), "can_read", lambda self, timeout=0: False)
    with slow_inserts():
        job = Job.objects.enqueue("echo")
        if POSTGRES:
            assert held().sent is None and held().failure is None
        else:  # the push follows the commit; its answer waits for the next use of Redis
            assert held().sent is not None and held().sent[1] == str(job.pk)
    monkeypatch.undo()
    assert engine.queue_ids("echo")[-1] == str(job.pk)
    assert engine.get_redis().hget(engine.TopicKeys("echo").metrics, "enqueued") == b"2"


def test_a_refusal_read_while_the_insert_commits_is_logged_after_it(redis_client, caplog):
    Job.objects.enqueue("echo")
    engine.get_redis()
    redis_client.set(engine.TopicKeys("echo").queue, "not a sorted set")
    logged_during_statement = []

    class Probe(logging.Handler):
        def emit(self, record):
            logged_during_statement.append(POSTGRES and statement_running())

    probe = Probe(logging.WARNING)
    logging.getLogger("jobqueue").addHandler(probe)
    try:
        with slow_inserts(), caplog.at_level(logging.WARNING, logger="jobqueue"):
            job = Job.objects.enqueue("echo")
            engine.get_redis()
    finally:
        logging.getLogger("jobqueue").removeHandler(probe)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(job.pk) in record.getMessage() and "WRONGTYPE" in record.getMessage()
    assert logged_during_statement == [False]  # never while the database connection was busy
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_a_noscript_answer_read_while_the_insert_commits_is_pushed_again_after_it(redis_client, monkeypatch):
    Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    redis_client.script_flush()
    during_statement = calls_noted(monkeypatch, engine_queue, "push")
    with slow_inserts():
        job = Job.objects.enqueue("echo")
    assert engine.queue_ids("echo")[-1] == str(job.pk)
    assert during_statement == [False]  # pushed again once, after the statement
    assert held().failure is None
    assert engine.get_redis().hget(engine.TopicKeys("echo").metrics, "enqueued") == b"2"


def test_a_connection_lost_while_the_insert_commits_puts_the_job_back(redis_client, caplog, monkeypatch):
    first = Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    mine = held()
    during_statement = calls_noted(monkeypatch, engine_reconcile, "restore")
    killed = threading.Event()

    def kill_once_pushed():  # Redis holds the push (paused) and closes the connection under it
        deadline = time.monotonic() + 10
        while mine.sent is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)
        kill_clients_of_this_database(redis_client)
        killed.set()

    redis_client.client_pause(300, all=False)  # writes (the push script) wait
    killer = threading.Thread(target=kill_once_pushed)
    killer.start()
    with slow_inserts(0.2), caplog.at_level(logging.WARNING, logger="jobqueue"):
        job = Job.objects.enqueue("echo")
        killer.join()
        assert killed.is_set()
        assert engine.queue_ids("echo") == [str(first.pk), str(job.pk)]  # put back, once
    assert during_statement == [False]  # after the statement
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert held().failure is None and held().sent is None


# -- enqueue_many(): the plain pushes packed by hand (sending.send_many) -------------------


def test_a_bulk_push_after_redis_lost_its_scripts_is_made_again(redis_client):
    Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    redis_client.script_flush()  # as after a restart: every chunk is answered NOSCRIPT
    jobs = Job.objects.enqueue_many([("echo", {"n": n}) for n in range(1500)])  # two chunks
    assert set(engine.queue_ids("echo")) >= {str(job.pk) for job in jobs}
    assert engine.get_redis().hget(engine.TopicKeys("echo").metrics, "enqueued") == b"1501"


def test_a_bulk_push_on_a_connection_redis_closed_queues_and_counts_every_job(redis_client, caplog):
    first = enqueue_after_commit("echo")  # the thread's connection is held, its answer unread
    engine.queue_ids("echo")
    kill_clients_of_this_database(redis_client)
    with caplog.at_level(logging.WARNING, logger="jobqueue"):
        jobs = Job.objects.enqueue_many([("echo", {"n": n}) for n in range(1500)])
    assert engine.queue_ids("echo") == [str(first.pk)] + [str(job.pk) for job in jobs]
    assert engine.get_redis().hget(engine.TopicKeys("echo").metrics, "enqueued") == b"1501"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_bulk_push_whose_answers_were_lost_puts_back_only_the_jobs_redis_lacks(redis_client, monkeypatch):
    first = Job.objects.enqueue("echo")
    engine.queue_ids("echo")
    conn = held().conn
    real = conn.read_response
    keys = engine.TopicKeys("echo")

    def second_lost(*args, **kwargs):  # the first chunk's answer comes; the second push is lost
        answer = real(*args, **kwargs)
        if second_lost.calls:
            real_ids = [i.decode() for i in redis_client.zrange(keys.queue, 0, -1)]
            redis_client.zrem(keys.queue, *real_ids[1001:])  # as if the second push never ran
            redis_client.hincrby(keys.metrics, "enqueued", -(len(real_ids) - 1001))
            raise redis.ConnectionError("Connection closed by server.")
        second_lost.calls += 1
        return answer

    second_lost.calls = 0
    monkeypatch.setattr(conn, "read_response", second_lost)
    jobs = Job.objects.enqueue_many([("echo", {"n": n}) for n in range(1500)])
    monkeypatch.undo()
    assert engine.queue_ids("echo") == [str(first.pk)] + [str(job.pk) for job in jobs]  # the second chunk's put back
    assert engine.get_redis().hget(keys.metrics, "enqueued") == b"1501"  # counted once each


def test_a_refused_bulk_push_is_logged_and_the_jobs_kept(redis_client, caplog):
    redis_client.set(engine.TopicKeys("echo").queue, "not a sorted set")
    with caplog.at_level(logging.WARNING, logger="jobqueue"):
        jobs = Job.objects.enqueue_many([("echo", {"n": n}) for n in range(150)])
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "WRONGTYPE" in record.getMessage()
    assert Job.objects.filter(pk__in=[job.pk for job in jobs], status=JobStatus.QUEUED).count() == 150
