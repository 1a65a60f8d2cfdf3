"""Precompiled statements for the hot paths: enqueueing a job, and the worker's
claim, success and execution row.

Compiling a queryset costs more than running its statement here, so the
statements every job needs are built once per database alias from the models'
metadata and run through Django's cursor. Values go through each field's
``get_db_prep_save`` and rows come back through the same converters the ORM uses,
so SQLite and PostgreSQL behave exactly as with querysets.
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.models import Field, Model

from .models import Execution, Job, JobStatus


def _db() -> str:
    return router.db_for_write(Job)


@cache
def _claim_sql(alias: str) -> str:
    conn = connections[alias]
    qn = conn.ops.quote_name
    meta = Job._meta
    columns = ", ".join(qn(str(f.column)) for f in meta.concrete_fields)
    # The job's highest Execution number comes back too (see lifecycle.claim): it can be above
    # ``attempts`` once a requeue reset them or an aborted attempt was not counted.
    last_execution = (
        f"(SELECT MAX({qn('attempt')}) FROM {qn(Execution._meta.db_table)} "
        f"WHERE {qn('job_id')} = {qn(meta.db_table)}.{qn(str(meta.pk.column))})"
    )
    return (
        f"UPDATE {qn(meta.db_table)} SET {qn('status')} = %s, {qn('attempts')} = {qn('attempts')} + 1, "
        f"{qn('started_at')} = %s, {qn('finished_at')} = NULL, {qn('worker_id')} = %s, {qn('updated_at')} = %s "
        f"WHERE {qn(str(meta.pk.column))} = %s AND {qn('status')} IN (%s, %s) RETURNING {columns}, {last_execution}"
    )


@cache
def _succeed_sql(alias: str) -> str:
    conn = connections[alias]
    qn = conn.ops.quote_name
    meta = Job._meta
    return (
        f"UPDATE {qn(meta.db_table)} SET {qn('status')} = %s, {qn('result')} = %s, {qn('finished_at')} = %s, "
        f"{qn('progress')} = 100, {qn('error')} = '', {qn('updated_at')} = %s "
        f"WHERE {qn(str(meta.pk.column))} = %s AND {qn('status')} = %s AND {qn('attempts')} = %s"
    )


EXECUTION_FIELDS = [f for f in Execution._meta.concrete_fields if not f.primary_key]
JOB_FIELDS = list(Job._meta.concrete_fields)


@cache
def _insert_sql(model: type[Model], alias: str) -> str:
    conn = connections[alias]
    qn = conn.ops.quote_name
    fields = EXECUTION_FIELDS if model is Execution else JOB_FIELDS
    columns = ", ".join(qn(str(f.column)) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {qn(model._meta.db_table)} ({columns}) VALUES ({marks})"


def _prep(model: type[Model], name: str, value: Any, connection: Any) -> Any:
    field = cast(Field, model._meta.get_field(name))
    return field.get_db_prep_save(value, connection)


@cache
def _converters(model: type[Model], alias: str) -> list[tuple[str, Any, list[Any]]]:
    connection = connections[alias]
    out = []
    for field in model._meta.concrete_fields:
        col = field.get_col(model._meta.db_table)
        out.append((field.attname, col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
    return out


def _from_row(model: type[Model], row: Any, connection: Any) -> Any:
    """Build a model instance from a ``RETURNING`` row, converting values as the ORM does."""
    converters = _converters(model, connection.alias)
    values = []
    for (_name, col, funcs), value in zip(converters, row, strict=True):
        for func in funcs:
            value = func(value, col, connection)
        values.append(value)
    return model.from_db(connection.alias, [name for name, _, _ in converters], values)


def claim_job(job_id: str, worker_id: str, now: Any) -> Job | None:
    """``UPDATE ... SET status = 'running' WHERE status IN ('queued', 'scheduled') RETURNING *``;
    the job's highest Execution number so far is set on it as ``last_execution``."""
    connection = connections[_db()]
    when = _prep(Job, "started_at", now, connection)
    params = [
        JobStatus.RUNNING.value,
        when,
        worker_id,
        when,
        _prep(Job, "id", job_id, connection),
        JobStatus.QUEUED.value,
        JobStatus.SCHEDULED.value,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(connection.alias), params)
        row = cursor.fetchone()
    if not row:
        return None
    job = _from_row(Job, row[:-1], connection)
    job.last_execution = row[-1] or 0
    return job


def mark_succeeded(job: Job, result: Any, now: Any) -> bool:
    """The success ``UPDATE``, guarded by the running state and this attempt."""
    connection = connections[_db()]
    with connection.cursor() as cursor:
        cursor.execute(_succeed_sql(connection.alias), _succeed_params(job, result, now, connection))
        return cursor.rowcount == 1


def _succeed_params(job: Job, result: Any, now: Any, connection: Any) -> list[Any]:
    """The parameters of the success ``UPDATE`` (see :func:`_succeed_sql`)."""
    when = _prep(Job, "finished_at", now, connection)
    return [
        JobStatus.SUCCEEDED.value,
        _prep(Job, "result", result, connection),
        when,
        when,
        _prep(Job, "id", job.pk, connection),
        JobStatus.RUNNING.value,
        job.attempts,
    ]


@cache
def _succeed_with_execution_sql(alias: str) -> str:
    qn = connections[alias].ops.quote_name
    columns = ", ".join(qn(str(f.column)) for f in EXECUTION_FIELDS)
    marks = ", ".join(["%s"] * len(EXECUTION_FIELDS))
    return (
        f"WITH done AS ({_succeed_sql(alias)} RETURNING {qn(str(Job._meta.pk.column))}) "
        f"INSERT INTO {qn(Execution._meta.db_table)} ({columns}) SELECT {marks} FROM done"
    )


def succeed_with_execution(job: Job, result: Any, now: Any, execution: Execution) -> bool:
    """Record a success and its Execution row at once (one statement on PostgreSQL,
    one transaction elsewhere). Returns False if the job was no longer this attempt's."""
    connection = connections[_db()]
    if connection.vendor != "postgresql":
        with transaction.atomic(using=connection.alias):
            if not mark_succeeded(job, result, now):
                return False
            insert_execution(execution)
            return True
    params = _succeed_params(job, result, now, connection)
    params += [f.get_db_prep_save(getattr(execution, f.attname), connection) for f in EXECUTION_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_succeed_with_execution_sql(connection.alias), params)
        return cursor.rowcount == 1


def insert_execution(execution: Execution) -> None:
    """Write an attempt's Execution row (its id is not read back)."""
    connection = connections[_db()]
    params = [f.get_db_prep_save(getattr(execution, f.attname), connection) for f in EXECUTION_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(Execution, connection.alias), params)


def insert_job(job: Job, using: str) -> None:
    """Insert a new job built by ``JobManager.build()``; like ``save(force_insert=True)``
    without the per-call compilation (and without ``pre_save``/``post_save``: listen
    to ``job_enqueued`` instead)."""
    connection = connections[using]
    params = [f.get_db_prep_save(getattr(job, f.attname), connection) for f in JOB_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(Job, connection.alias), params)
    job._state.adding = False
    job._state.db = using
