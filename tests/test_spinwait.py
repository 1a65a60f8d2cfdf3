"""The hot statements' answers are waited for by polling the socket for a moment
(``jobqueue/transitions/spinwait.py``): an answer within the budget is read without
psycopg's sleeping wait, a later one goes on through it, errors and a closed connection
are psycopg's as ever, and a connection whose answers keep coming late stops polling.

These talk to the suite's PostgreSQL through psycopg directly, whichever database the
suite's Django uses (the polling is psycopg's only)."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest
from django.test import override_settings

from jobqueue.conf import settings as jq_settings
from jobqueue.transitions import fastsql, spinwait

from .test_hot_path import POSTGRES


@pytest.fixture
def raw():
    params = {"host": os.environ.get("JOBQUEUE_TEST_PG_HOST", "127.0.0.1"),
              "port": os.environ.get("JOBQUEUE_TEST_PG_PORT", "5432"),
              "user": os.environ.get("JOBQUEUE_TEST_PG_USER", "postgres"),
              "password": os.environ.get("JOBQUEUE_TEST_PG_PASSWORD", "")}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.params = params  # for a second connection
        yield conn


@pytest.fixture
def polled(monkeypatch):
    """The budgets (seconds) of the statements waited for polling, in order."""
    budgets = []
    real = spinwait.spinning

    def spy(*args, **kwargs):
        budgets.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(spinwait, "spinning", spy)
    return budgets


def spin_budget(us):
    return override_settings(JOBQUEUE={**jq_settings.user_settings(), "SPIN_WAIT_MICROSECONDS": us})


def test_an_answer_within_the_budget_is_read_polling_and_never_waited_for_asleep(raw):
    cursor = raw.cursor()
    state = spinwait.SpinState()
    driven = spinwait.spinning(cursor._execute_gen("SELECT 42, 'x'", None), raw.pgconn.socket, 5.0, state,
                               fastsql._READY)
    with pytest.raises(StopIteration):  # done before anything was handed to psycopg's wait
        next(driven)
    assert cursor.fetchone() == (42, "x")
    assert state.misses == 0


def test_a_later_answer_goes_on_through_psycopgs_wait(raw):
    cursor = raw.cursor()
    state = spinwait.SpinState()
    handed = []

    def counted(gen):
        sent = None
        try:
            while True:
                waiting = gen.send(sent)
                handed.append(waiting)
                sent = yield waiting
        except StopIteration as done:
            return done.value

    driven = spinwait.spinning(cursor._execute_gen("SELECT pg_sleep(0.05), 7", None), raw.pgconn.socket, 0.001,
                               state, fastsql._READY)
    raw.wait(counted(driven))
    assert cursor.fetchone() == ("", 7)
    assert handed  # psycopg's own wait took over after the budget
    assert state.misses == 1


def test_another_socket_given_meanwhile_is_read_as_soon_as_it_is_readable(raw):
    """An enqueue reads its push's answer while its INSERT commits: the socket ``meanwhile``
    gives is polled with the statement's and read once, before the statement's answer."""
    import socket
    import time

    cursor = raw.cursor()
    other, peer = socket.socketpair()
    read_at = []

    def meanwhile():
        threading.Timer(0.01, peer.send, [b"answer"]).start()  # comes while the statement runs
        return other.fileno(), lambda: read_at.append((other.recv(16), time.monotonic()))

    driven = spinwait.spinning(cursor._execute_gen("SELECT pg_sleep(0.1), 7", None), raw.pgconn.socket, 5.0,
                               spinwait.SpinState(), fastsql._READY, meanwhile)
    with pytest.raises(StopIteration):
        next(driven)
    done_at = time.monotonic()
    assert cursor.fetchone() == ("", 7)
    [(data, at)] = read_at
    assert data == b"answer" and done_at - at > 0.05  # read while the statement still ran
    other.close()
    peer.close()


def test_a_reader_given_meanwhile_that_raises_is_logged_and_the_statement_goes_on(raw, caplog):
    import socket

    cursor = raw.cursor()
    other, peer = socket.socketpair()
    peer.send(b"x")

    def broken():
        raise OSError("the other socket broke")

    driven = spinwait.spinning(cursor._execute_gen("SELECT pg_sleep(0.05), 9", None), raw.pgconn.socket, 5.0,
                               spinwait.SpinState(), fastsql._READY, lambda: (other.fileno(), broken))
    with caplog.at_level("ERROR", logger="jobqueue.transitions"), pytest.raises(StopIteration):
        next(driven)
    assert cursor.fetchone() == ("", 9)  # read in full: the connection is usable
    assert cursor.execute("SELECT 1").fetchone() == (1,)
    assert "Reading another socket while a statement ran failed" in caplog.text
    other.close()
    peer.close()


def test_nothing_given_meanwhile_changes_nothing(raw):
    cursor = raw.cursor()
    asked = []
    driven = spinwait.spinning(cursor._execute_gen("SELECT 5", None), raw.pgconn.socket, 5.0,
                               spinwait.SpinState(), fastsql._READY, lambda: asked.append(1))
    with pytest.raises(StopIteration):
        next(driven)
    assert cursor.fetchone() == (5,)
    assert asked == [1]


def test_the_preparing_cursor_polls_when_asked_by_default_and_not_when_turned_off(raw, polled):
    calls = polled
    cursor = fastsql._PreparingCursor(raw)
    assert cursor.execute_polling("SELECT %s::int + 1", [41]).fetchone() == (42,)
    assert calls == [jq_settings.SPIN_WAIT_MICROSECONDS / 1e6] and calls[0] > 0
    assert cursor.execute("SELECT %s::int + 3", [41]).fetchone() == (44,)  # not asked
    with spin_budget(0):
        assert cursor.execute_polling("SELECT %s::int + 2", [41]).fetchone() == (43,)
    assert len(calls) == 1
    with spin_budget(250):
        cursor.execute_polling("SELECT 1")
    assert calls[1:] == [0.00025]


def test_a_connection_whose_answers_keep_coming_late_stops_polling_and_tries_again(raw, polled, monkeypatch):
    calls = polled
    monkeypatch.setattr(spinwait, "RETRY_AFTER", 5)
    cursor = fastsql._PreparingCursor(raw)
    with spin_budget(1):  # a microsecond: every answer is late
        for _ in range(spinwait.GIVE_UP):
            assert cursor.execute_polling("SELECT pg_sleep(0.002), 1").fetchone() == ("", 1)
        assert len(calls) == spinwait.GIVE_UP and cursor._spin.misses == spinwait.GIVE_UP
        for _ in range(5):
            cursor.execute_polling("SELECT 1")
        assert len(calls) == spinwait.GIVE_UP  # waited asleep meanwhile
        cursor.execute_polling("SELECT pg_sleep(0.002)")  # tried once more: late again
        assert len(calls) == spinwait.GIVE_UP + 1 and cursor._spin.misses == spinwait.GIVE_UP
    with spin_budget(5_000_000):
        for _ in range(5):  # given up again, for RETRY_AFTER statements, however long the budget
            cursor.execute_polling("SELECT 1")
        assert len(calls) == spinwait.GIVE_UP + 1
        cursor.execute_polling("SELECT 1")  # the next try, in time: polling again from now on
        assert len(calls) == spinwait.GIVE_UP + 2 and cursor._spin.misses == 0
        cursor.execute_polling("SELECT 1")
        assert len(calls) == spinwait.GIVE_UP + 3


def test_an_error_while_polling_is_psycopgs_and_the_connection_goes_on(raw):
    cursor = fastsql._PreparingCursor(raw)
    with pytest.raises(psycopg.errors.DivisionByZero):
        cursor.execute_polling("SELECT 1 / %s::int", [0])
    assert cursor.execute_polling("SELECT %s::int", [5]).fetchone() == (5,)


def test_a_connection_the_server_closes_while_polling_raises_instead_of_hanging(raw):
    pid = raw.info.backend_pid
    cursor = fastsql._PreparingCursor(raw)

    def terminate():
        with psycopg.connect(dbname="postgres", autocommit=True, **raw.params) as other:
            while not other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND query LIKE %s",
                                    [pid, "%pg_sleep(30)%"]).fetchone()[0]:
                pass
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

    killer = threading.Thread(target=terminate)
    killer.start()
    with spin_budget(1_000_000), pytest.raises(psycopg.OperationalError):
        cursor.execute_polling("SELECT pg_sleep(30)")
    killer.join()
    assert raw.closed or raw.broken


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_waits_polling_on_postgresql_and_a_claim_asleep(polled):
    from django.utils import timezone

    from jobqueue.models import Job, JobStatus

    calls = polled
    job = Job.objects.enqueue("echo", {"n": 1})
    claimed = fastsql.claim_job(str(job.pk), "w", timezone.now())
    assert claimed is not None and claimed.status == JobStatus.RUNNING
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING
    # Only psycopg 3 on PostgreSQL has statements to poll; elsewhere Django's cursor runs them.
    assert len(calls) == (1 if POSTGRES else 0)


def test_a_statement_with_nothing_to_wait_for_is_done_at_once():
    def answered():
        return "the result"
        yield  # a generator that never waits

    with pytest.raises(StopIteration) as done:
        next(spinwait.spinning(answered(), 0, 1.0, spinwait.SpinState(), fastsql._READY))
    assert done.value.value == "the result"
