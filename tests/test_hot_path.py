"""The hot path: prepared statements, parameters prepared without Django's per-field
calls, and the worker claiming its next job in the statement that records a success."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobqueue import engine
from jobqueue.models import Execution, Job, JobStatus
from jobqueue.signals import job_started
from jobqueue.transitions import attempt, fastsql
from jobqueue.worker import Worker, readahead
from jobqueue.worker.readahead import Stage

from .workerutil import jobqueue_settings, run_worker

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"


class StatementLog:
    """An execute wrapper recording every statement's SQL."""

    def __init__(self):
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)

    def count(self, *fragments: str) -> int:
        return sum(all(f in sql for f in fragments) for sql in self.sql)


@contextmanager
def on_job_started(receiver):
    """Connect ``receiver`` to ``job_started`` for the block."""
    job_started.connect(receiver, dispatch_uid="tests.hot_path.job_started")
    try:
        yield
    finally:
        job_started.disconnect(dispatch_uid="tests.hot_path.job_started")


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


# -- the worker's next job ----------------------------------------------------------------


def test_worker_claims_its_next_jobs_while_recording_successes(monkeypatch):
    monkeypatch.setattr(readahead, "PREFETCH_WINDOW_SECONDS", 1e9)  # batches as large as WORKER_PREFETCH
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(5)]
    log = StatementLog()
    with connection.execute_wrapper(log):
        run_worker("echo")

    rows = {job.pk: job for job in Job.objects.filter(pk__in=[j.pk for j in jobs])}
    assert {row.status for row in rows.values()} == {JobStatus.SUCCEEDED}
    executions = list(Execution.objects.filter(job__in=jobs).order_by("started_at"))
    assert [(e.attempt, e.outcome) for e in executions] == [(1, "succeeded")] * 5
    # One worker, one slot: no attempt starts before the previous one ended, and each
    # row says when its job started, not when it was claimed.
    for before, after in zip(executions, executions[1:], strict=False):
        assert after.started_at >= before.finished_at
    for execution in executions:
        row = rows[execution.job_id]
        assert (row.started_at, row.finished_at) == (execution.started_at, execution.finished_at)
    fused = log.count("claimed AS (UPDATE")
    claims = log.count("RETURNING", '"attempts" = "attempts" + 1') - fused
    if POSTGRES:
        # The first job is claimed alone, and its success claims the second (no pace
        # known yet); the second's claims the three others, whose successes are held
        # and recorded together by the last one.
        assert (claims, fused) == (1, 3)
    else:
        assert (claims, fused) == (5, 0)


def test_a_leased_job_cancelled_before_its_claim_is_skipped():
    first, doomed, last = (Job.objects.enqueue("echo", {"i": i}) for i in range(3))

    def cancel_behind_the_queue(sender, job, **kwargs):
        if job.pk == first.pk:  # still in the Redis queue: only the claim can notice
            Job.objects.filter(pk=doomed.pk).update(status=JobStatus.CANCELLED)

    with on_job_started(cancel_behind_the_queue):
        run_worker("echo")

    assert Job.objects.get(pk=doomed.pk).status == JobStatus.CANCELLED
    assert not Execution.objects.filter(job=doomed).exists()
    assert Job.objects.get(pk=last.pk).status == JobStatus.SUCCEEDED
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_a_next_job_claimed_as_the_worker_stops_is_put_back():
    first, second, third = (Job.objects.enqueue("echo", {"i": i}) for i in range(3))
    worker = Worker(topics=["echo"], burst=True, install_signals=False)

    def stop_on_second(sender, job, **kwargs):
        if job.pk == second.pk:
            worker.stop()

    with on_job_started(stop_on_second):
        assert worker.run() == 0

    second = Job.objects.get(pk=second.pk)
    assert Job.objects.get(pk=first.pk).status == JobStatus.SUCCEEDED
    assert Job.objects.get(pk=third.pk).status == JobStatus.QUEUED
    if POSTGRES:
        # Claimed with the first job's success, never started: back in the queue, uncounted.
        assert (second.status, second.attempts, second.worker_id) == (JobStatus.QUEUED, 0, "")
        assert not Execution.objects.filter(job=second).exists()
        assert sorted(engine.queue_ids("echo")) == sorted([str(second.pk), str(third.pk)])
    else:
        # Claimed on its own: a stop lets the job it was given finish.
        assert (second.status, second.attempts) == (JobStatus.SUCCEEDED, 1)
        assert engine.queue_ids("echo") == [str(third.pk)]
    assert engine.depths("echo")["leased"] == 0
    run_worker("echo")
    assert set(Job.objects.filter(pk__in=[second.pk, third.pk]).values_list("status", flat=True)) == {"succeeded"}


def test_a_job_leased_but_never_claimed_goes_back_when_the_worker_exits():
    # What a worker holds when the statement that would have claimed its next job failed.
    job = Job.objects.enqueue("echo", {"x": 1})
    worker = Worker(topics=["echo"], burst=True, install_signals=False)
    assert engine.pop("echo") == [str(job.pk)]
    worker.readahead.lease(str(job.pk), "echo")
    worker.readahead.give_back()
    assert worker.readahead.stage is Stage.EMPTY
    assert engine.queue_ids("echo") == [str(job.pk)]
    assert engine.depths("echo")["leased"] == 0
    assert (Job.objects.get(pk=job.pk).status, Job.objects.get(pk=job.pk).attempts) == (JobStatus.QUEUED, 0)


def test_max_jobs_leases_nothing_beyond_the_last_job():
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3)]
    run_worker("echo", burst=False, max_jobs=2)
    assert [Job.objects.get(pk=j.pk).status for j in jobs] == ["succeeded", "succeeded", "queued"]
    assert engine.queue_ids("echo") == [str(jobs[2].pk)]
    assert engine.depths("echo")["leased"] == 0


def test_a_batch_is_recorded_with_a_generic_plan_for_its_own_transaction_only():
    """``record_and_claim`` is planned generically (planned afresh for every batch, it took
    longer to plan than to run), by a setting that ends with the statement's implicit
    transaction; inside a transaction of the caller's it is planned as PostgreSQL chooses,
    the setting never reaching the caller's other statements."""
    first, second, third, fourth = jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(4)]
    assert engine.pop("echo", 4) == [str(job.pk) for job in jobs]

    def recorded(job, execution, next_ids):
        execution.outcome, execution.finished_at = "succeeded", timezone.now()
        return fastsql.record_and_claim([(job, None, execution)], next_ids, "w", timezone.now())

    if not fastsql.can_fuse():  # SQLite: each success is recorded, and each job claimed, on its own
        assert not POSTGRES
        return
    done, [claimed] = recorded(*attempt.claim(str(first.pk), "w", 0), [str(second.pk)])
    assert done == {str(first.pk)} and claimed.pk == second.pk and claimed.status == JobStatus.RUNNING
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone() == ("auto",)  # the session's setting, as it was
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                       "WHERE statement LIKE 'WITH succeeded%%'")
        assert cursor.fetchall() == [(1, 0)]
        cursor.execute("DEALLOCATE ALL")  # as a pooler's reset does: prepared again, under new names
    execution = Execution(job=claimed, attempt=claimed.attempts, worker_id="w", hostname="h", pid=0,
                                  started_at=claimed.started_at)
    done, [claimed] = recorded(claimed, execution, [str(third.pk)])
    assert done == {str(second.pk)} and claimed.pk == third.pk
    with transaction.atomic():
        done, claimed = recorded(*attempt.claim(str(fourth.pk), "w", 0), [])
        with connection.cursor() as cursor:
            cursor.execute("SHOW plan_cache_mode")
            assert cursor.fetchone() == ("auto",)
    assert done == {str(fourth.pk)} and claimed == []
    assert {job.status for job in Job.objects.exclude(pk=third.pk)} == {JobStatus.SUCCEEDED}


# -- statements -----------------------------------------------------------------------------


def test_hot_statements_are_prepared_on_postgresql_only():
    connection.close()
    Job.objects.enqueue("echo", {"x": 1})
    run_worker("echo")
    if POSTGRES:
        prepared = prepared_statements()
        assert any(s.startswith('INSERT INTO "jobqueue_job"') for s in prepared), prepared
        assert any(s.startswith('UPDATE "jobqueue_job" SET "status" = $1, "attempts"') for s in prepared), prepared
        # Django's own statements are not prepared (Django leaves preparing off for poolers).
        assert not any("django_" in s or "auth_" in s for s in prepared)
    else:
        with fastsql._cursor(connection) as cursor:
            assert type(cursor).__module__.startswith("django.")


def test_prepared_statements_can_be_turned_off():
    connection.close()
    with jobqueue_settings(PREPARED_STATEMENTS=False):
        Job.objects.enqueue("echo", {"x": 1})
        run_worker("echo")
        with fastsql._cursor(connection) as cursor:
            assert type(cursor).__module__.startswith("django.")
    if POSTGRES:
        assert prepared_statements() == []
    assert Job.objects.get().status == JobStatus.SUCCEEDED


def test_a_pooler_setting_of_the_database_keeps_statements_unprepared(monkeypatch):
    connection.close()
    options = {**connection.settings_dict.get("OPTIONS", {}), "prepare_threshold": None}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    if not POSTGRES:
        options.pop("prepare_threshold")  # not a SQLite option
    Job.objects.enqueue("echo", {"x": 1})
    with fastsql._cursor(connection) as cursor:
        assert type(cursor).__module__.startswith("django.")
    if POSTGRES:
        assert prepared_statements() == []


def test_logged_statements_go_through_django_cursor():
    with CaptureQueriesContext(connection) as queries:
        job = Job.objects.enqueue("echo", {"x": 1})
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "jobqueue_job"')]
    assert len(inserts) == 1 and str(job.pk.hex) in inserts[0].replace("-", "")


def test_failed_statement_raises_django_errors_and_leaves_the_connection_usable():
    from django.db import IntegrityError

    job = Job.objects.enqueue("echo", {"x": 1})
    twin, _ = Job.objects.build("echo", {"x": 2})
    twin.pk = job.pk
    with pytest.raises(IntegrityError):
        fastsql.insert_job(twin, "default")
    assert Job.objects.filter(pk=job.pk).count() == 1
    assert Job.objects.enqueue("echo", {"x": 3}).status == JobStatus.QUEUED


def test_parameters_are_what_django_would_send():
    job, _ = Job.objects.build("echo", {"x": [1, "two"]}, priority=-3, delay=5)
    job.entity_id = "e-1"
    execution = Execution(job=job, attempt=2, worker_id="w", hostname="h", pid=7, started_at=timezone.now(),
                          finished_at=timezone.now(), outcome="succeeded", duration=0.5)
    for model, fields, obj in ((Job, fastsql.JOB_FIELDS, job), (Execution, fastsql.EXECUTION_FIELDS, execution)):
        ours = fastsql._prep_row(model, fields, obj, connection)
        django = [f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields]
        for field, mine, theirs in zip(fields, ours, django, strict=True):
            # JSON goes through Django either way (its adapter object has no equality).
            mine, theirs = getattr(mine, "obj", mine), getattr(theirs, "obj", theirs)
            assert (field.name, mine, type(mine)) == (field.name, theirs, type(theirs))


def test_rows_come_back_with_the_datetimes_django_gives(monkeypatch):
    """The hot statements' rows carry the datetimes the ORM gives, to the tzinfo. On
    PostgreSQL they load timestamptz with psycopg's own loader where Django's would only set
    the UTC the value already has; SQLite's rows go through Django's converters."""
    import datetime as dt
    import zoneinfo

    job = Job.objects.enqueue("echo", {"x": 1}, run_after=timezone.now() - timezone.timedelta(seconds=5))
    claimed = fastsql.claim_job(str(job.pk), "w", timezone.now())
    assert claimed is not None
    loaded = Job.objects.get(pk=job.pk)
    for name in ("created_at", "updated_at", "queued_at", "started_at", "run_after"):
        ours, django = getattr(claimed, name), getattr(loaded, name)
        assert (name, ours, ours.tzinfo) == (name, django, django.tzinfo)
        assert ours.tzinfo is dt.timezone.utc
    if not POSTGRES:
        return
    with fastsql._cursor(connection) as cursor:
        assert cursor.adapters.get_loader(fastsql._TIMESTAMPTZ, 0) is fastsql._FAST_TZ_LOADER
    # A database whose time zone is not UTC keeps Django's loader (it sets that zone).
    monkeypatch.setitem(connection.__dict__, "timezone", zoneinfo.ZoneInfo("Europe/Paris"))
    with fastsql._cursor(connection) as cursor:
        assert cursor.adapters.get_loader(fastsql._TIMESTAMPTZ, 0) is connection.connection.adapters.get_loader(
            fastsql._TIMESTAMPTZ, 0)


@pytest.mark.parametrize("listening", [False, True])
def test_a_claimed_job_and_its_execution_are_the_instances_django_builds(listening):
    """The claim builds its Job and Execution without ``Model.__init__``'s per-field work;
    they are what ``from_db()`` and ``Execution(job=...)`` give, and a ``post_init``
    receiver still sees both."""
    from django.db.models.signals import post_init

    from jobqueue.transitions import attempt

    job = Job.objects.enqueue("echo", {"x": 1})
    seen: list[Any] = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    if listening:
        post_init.connect(receiver, sender=Job)
        post_init.connect(receiver, sender=Execution)
    try:
        claimed, execution = attempt.claim(str(job.pk), "w", 7)
    finally:
        post_init.disconnect(receiver, sender=Job)
        post_init.disconnect(receiver, sender=Execution)
    loaded = Job.objects.get(pk=job.pk)
    assert (claimed._state.adding, claimed._state.db) == (loaded._state.adding, loaded._state.db) == (False, "default")
    for field in Job._meta.concrete_fields:
        assert getattr(claimed, field.attname) == getattr(loaded, field.attname), field.attname
    assert execution._state.adding is True and execution.pk is None
    with CaptureQueriesContext(connection) as queries:
        assert execution.job is claimed  # cached: no query
    assert len(queries) == 0
    assert (execution.job_id, execution.attempt, execution.worker_id, execution.pid) == (job.pk, 1, "w", 7)
    assert (execution.outcome, execution.finished_at, execution.stdout) == (
        Execution._meta.get_field("outcome").get_default(), None, "")
    if listening:
        assert seen[-2:] == [claimed, execution]
    claimed.priority = 4
    claimed.save(update_fields=["priority"])  # an UPDATE: the instance is a loaded one
    execution.save()
    assert Job.objects.get(pk=job.pk).priority == 4 and Execution.objects.filter(job_id=job.pk).count() == 1


def test_a_null_is_handed_only_to_converters_that_would_change_it(monkeypatch):
    """A claimed row's NULL JSON columns skip their converter (it leaves ``None`` as
    it is); a converter that turns ``None`` into something is still called for it."""
    from django.db.models import JSONField

    from jobqueue.transitions import attempt

    real = JSONField.from_db_value
    handed: list[Any] = []

    def spy(self, value, expression, conn):
        handed.append((self.name, value))
        return real(self, value, expression, conn)

    def nulls_made_empty(self, value, expression, conn):
        return {} if value is None else real(self, value, expression, conn)

    for converter, result in ((spy, None), (nulls_made_empty, {})):
        monkeypatch.setattr(JSONField, "from_db_value", converter)
        fastsql._converters.cache_clear()
        try:
            job = Job.objects.enqueue("echo", {"x": 1})
            fastsql._converters(Job, connection.alias)  # looked up again, with this converter
            handed.clear()
            claimed, _ = attempt.claim(str(job.pk), "w", 7)
        finally:
            fastsql._converters.cache_clear()
        assert (claimed.payload, claimed.result, claimed.trace_context) == ({"x": 1}, result, result)
        if converter is spy:  # the payload's text only: never a NULL
            assert [name for name, _ in handed] == ["payload"] and handed[0][1] is not None


def test_a_naive_datetime_still_goes_through_django(settings):
    import datetime as dt
    import warnings

    naive = dt.datetime(2030, 1, 1, 12, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Django warns about naive datetimes
        prepared = fastsql._prep(Job, "run_after", naive, connection)
        expected = Job._meta.get_field("run_after").get_db_prep_save(naive, connection)
    assert prepared == expected
    if POSTGRES:
        assert prepared.tzinfo is not None  # made aware, as Django does


def test_a_plain_job_is_inserted_with_its_fresh_columns_as_constants():
    log = StatementLog()
    with connection.execute_wrapper(log):
        plain = Job.objects.enqueue("echo", {"x": 1}, priority=7)
        later = Job.objects.enqueue("echo", {"x": 2}, delay=60)
    inserts = [sql for sql in log.sql if sql.startswith('INSERT INTO "jobqueue_job"')]
    assert len(inserts) == 2
    assert inserts[0].count("%s") == len(fastsql.JOB_FIELDS) - len(fastsql.FRESH_JOB)
    assert inserts[1].count("%s") == len(fastsql.JOB_FIELDS)  # run_after set: the full INSERT
    row = Job.objects.get(pk=plain.pk)
    assert {name: getattr(row, name) for name in fastsql.FRESH_JOB} == fastsql.FRESH_JOB
    assert (row.payload, row.priority, row.status, row.max_attempts, row.timeout) == ({"x": 1}, 7, "queued", 2, 30)
    assert Job.objects.get(pk=later.pk).run_after == later.run_after


def test_a_next_job_that_cannot_start_is_left_to_its_lease():
    from jobqueue.worker.lifecycle import recover

    first, second, third = (Job.objects.enqueue("echo", {"i": i}) for i in range(3))

    def refuse_second(sender, job, **kwargs):
        if job.pk == second.pk:
            raise RuntimeError("a receiver that fails")

    with on_job_started(refuse_second):
        run_worker("echo")

    assert Job.objects.get(pk=first.pk).status == JobStatus.SUCCEEDED
    assert Job.objects.get(pk=third.pk).status == JobStatus.SUCCEEDED
    # Claimed, never started, and still leased: recovered like a job whose worker died.
    assert Job.objects.get(pk=second.pk).status == JobStatus.RUNNING
    assert engine.depths("echo")["leased"] == 1
    recover("echo", str(second.pk))
    second = Job.objects.get(pk=second.pk)
    assert (second.status, second.attempts) == (JobStatus.QUEUED, 1)
    assert list(Execution.objects.filter(job=second).values_list("outcome", flat=True)) == ["lost"]
    run_worker("echo")
    assert Job.objects.get(pk=second.pk).status == JobStatus.SUCCEEDED



def test_one_preparing_cursor_serves_a_connection_until_it_or_its_time_zone_changes():
    """The hot statements share one cursor per database connection; a new connection, or a
    session time zone other than the one the cursor was made for, gets a new one, and the
    statements keep working throughout."""
    def cursor_of_a_statement():
        with fastsql._cursor(connection) as cursor:
            cursor.execute("SELECT 1")
            return cursor

    Job.objects.enqueue("echo", {"x": 1})
    first = cursor_of_a_statement()
    if not POSTGRES:  # Django's own cursor, one per statement
        assert type(first).__module__.startswith("django.") and cursor_of_a_statement() is not first
        return
    assert cursor_of_a_statement() is first
    connection.close()
    job = Job.objects.enqueue("echo", {"x": 2})
    second = cursor_of_a_statement()
    assert second is not first and not second.closed
    with connection.cursor() as plain:
        plain.execute("SET TIME ZONE 'Europe/Paris'")
    try:
        third = cursor_of_a_statement()
        assert third is not second
        # Not UTC: the session's own loader, as Django's cursors have.
        assert third.adapters.get_loader(fastsql._TIMESTAMPTZ, 0) is not fastsql._FAST_TZ_LOADER
    finally:
        with connection.cursor() as plain:
            plain.execute("SET TIME ZONE 'UTC'")
    assert cursor_of_a_statement() is not third
    claimed = fastsql.claim_job(str(job.pk), "w", timezone.now())
    assert claimed is not None and claimed.started_at == Job.objects.get(pk=job.pk).started_at
