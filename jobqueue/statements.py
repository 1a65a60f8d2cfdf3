"""Precompiled statements for the hot paths: enqueueing a job, and the worker's
claim, success and execution row.

Compiling a queryset costs more than running its statement here, so the
statements every job needs are built once per database alias from the models'
metadata and run through Django's cursor. Values go through each field's
``get_db_prep_save`` and rows come back through the same converters the ORM uses,
so SQLite and PostgreSQL behave exactly as with querysets.

On PostgreSQL with psycopg 3 they are also prepared on the server (see
:func:`_cursor`): planning an ``UPDATE`` of a table with this many indexes costs
more than running it. ``JOBQUEUE["PREPARED_STATEMENTS"] = False`` turns that off
(needed behind PgBouncer's transaction pooling before 1.21).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, cast

from django.db import connections, router, transaction
from django.db.models import Field, Model

from .conf import settings
from .models import Execution, Job, JobStatus

try:
    import psycopg
except ImportError:  # psycopg2, or no PostgreSQL driver at all
    psycopg = None  # type: ignore[assignment]


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
def _insert_sql(model: type[Model], alias: str, fresh: bool = False) -> str:
    """``INSERT`` of every column; with ``fresh`` (jobs only) the :data:`FRESH_JOB`
    columns are SQL constants instead of parameters."""
    conn = connections[alias]
    qn = conn.ops.quote_name
    fields = EXECUTION_FIELDS if model is Execution else JOB_FIELDS
    constants = FRESH_JOB if fresh else {}
    columns = ", ".join(qn(str(f.column)) for f in fields)
    marks = ", ".join(_constant(constants[f.attname]) if f.attname in constants else "%s" for f in fields)
    return f"INSERT INTO {qn(model._meta.db_table)} ({columns}) VALUES ({marks})"


@contextmanager
def _cursor(connection: Any) -> Iterator[Any]:
    """A cursor for one hot statement, whose ``execute`` prepares it on PostgreSQL.

    With psycopg 3 this is a server-side-binding cursor on Django's own connection
    (same transaction, same adapters, errors wrapped as Django's), and each statement
    is prepared on its first run. Django's cursor is used instead when statements
    are being logged or wrapped (``DEBUG``, ``execute_wrapper()``), on other drivers
    and databases, when ``PREPARED_STATEMENTS`` is off, and when the database's
    ``OPTIONS`` ask for no preparing.
    """
    options = connection.settings_dict.get("OPTIONS", {})
    if (
        psycopg is None
        or connection.vendor != "postgresql"
        or connection.queries_logged
        or connection.execute_wrappers
        or not settings.PREPARED_STATEMENTS
        # The project asked for no preparing: "prepare_threshold": None, or server-side
        # binding with Django's default (None) threshold.
        or (options.get("prepare_threshold") is None
            and ("prepare_threshold" in options or options.get("server_side_binding") is True))
    ):
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django's default: preparing off. Its own cursors bind on the client and never
        # prepare, so only this cursor's statements are affected; a threshold this high
        # never prepares anything else.
        raw.prepare_threshold = _NEVER_AUTOMATICALLY
    with connection.wrap_database_errors:
        cursor = _PreparingCursor(raw)
        try:
            yield cursor
        finally:
            cursor.close()


#: psycopg's prepare threshold on a connection Django left unprepared: only statements run
#: with ``prepare=True`` (these) are prepared.
_NEVER_AUTOMATICALLY = 2**31

if psycopg is not None:

    class _PreparingCursor(psycopg.Cursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, prepare=True)


#: Python types that a field of this internal type saves unchanged on PostgreSQL (or, for
#: integers, wrapped in psycopg's type of the column's width, as Django does): for these
#: ``get_db_prep_save`` is cheap to do here, and calling it per field is most of an
#: enqueue's Python time. Anything else (JSON, naive datetimes, subclasses) goes through it.
_SAVED_AS_IS: dict[str, tuple[type, ...]] = {
    "CharField": (str,),
    "TextField": (str,),
    "IntegerField": (int,),
    "PositiveIntegerField": (int,),
    "SmallIntegerField": (int,),
    "PositiveSmallIntegerField": (int,),
    "BigIntegerField": (int,),
    "BooleanField": (bool,),
    "FloatField": (float,),
    "UUIDField": (uuid.UUID,),
    "DateTimeField": (dt.datetime,),
}


def _same(value: Any) -> Any:
    return value


@cache
def _fast_prep(model: type[Model], name: str, alias: str) -> tuple[tuple[type, ...], Any]:
    """The value types ``model.name`` prepares cheaply on database ``alias`` (None
    included but for JSON), and how."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return (), _same
    field = cast(Field, model._meta.get_field(name))
    internal = (field.target_field if field.is_relation else field).get_internal_type()  # type: ignore[attr-defined]
    if internal == "JSONField":
        return (), _same
    integers = getattr(connection.ops, "integerfield_type_map", {})  # psycopg 3's Int2/Int4/Int8
    return (*_SAVED_AS_IS.get(internal, ()), type(None)), integers.get(internal, _same)


def _prep(model: type[Model], name: str, value: Any, connection: Any) -> Any:
    """``field.get_db_prep_save(value)``, done here where that is cheap (an aware
    datetime, a str for a text column, an int...)."""
    kinds, convert = _fast_prep(model, name, connection.alias)
    kind = type(value)
    if kind in kinds and (kind is not dt.datetime or value.tzinfo is not None):
        return value if value is None else convert(value)
    field = cast(Field, model._meta.get_field(name))
    return field.get_db_prep_save(value, connection)


def _prep_row(model: type[Model], fields: list[Any], obj: Model, connection: Any) -> list[Any]:
    return [_prep(model, f.name, getattr(obj, f.attname), connection) for f in fields]


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
    params = _claim_params(job_id, worker_id, _prep(Job, "started_at", now, connection), connection)
    with _cursor(connection) as cursor:
        cursor.execute(_claim_sql(connection.alias), params)
        row = cursor.fetchone()
    return _claimed(row, connection) if row else None


def _claimed(row: Any, connection: Any) -> Job:
    """The job of a claim's ``RETURNING`` row, with ``last_execution`` from its last column."""
    job = _from_row(Job, row[:-1], connection)
    job.last_execution = row[-1] or 0
    return job


def _claim_params(job_id: str, worker_id: str, when: Any, connection: Any) -> list[Any]:
    """The parameters of the claim ``UPDATE`` (see :func:`_claim_sql`)."""
    return [
        JobStatus.RUNNING.value,
        when,
        worker_id,
        when,
        _prep(Job, "id", job_id, connection),
        JobStatus.QUEUED.value,
        JobStatus.SCHEDULED.value,
    ]


def mark_succeeded(job: Job, result: Any, now: Any) -> bool:
    """The success ``UPDATE``, guarded by the running state and this attempt."""
    connection = connections[_db()]
    with _cursor(connection) as cursor:
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
def _insert_execution_from_sql(alias: str, source: str) -> str:
    """``INSERT`` an Execution row for each row of ``source`` (values are parameters)."""
    conn = connections[alias]
    qn = conn.ops.quote_name
    columns = ", ".join(qn(str(f.column)) for f in EXECUTION_FIELDS)
    # Typed: a parameter in a SELECT list has no column to take its type from.
    marks = ", ".join(f"CAST(%s AS {f.cast_db_type(conn)})" for f in EXECUTION_FIELDS)
    return f"INSERT INTO {qn(Execution._meta.db_table)} ({columns}) SELECT {marks} FROM {source}"


def _done_cte(alias: str) -> str:
    pk = connections[alias].ops.quote_name(str(Job._meta.pk.column))
    return f"done AS ({_succeed_sql(alias)} RETURNING {pk})"


@cache
def _succeed_with_execution_sql(alias: str) -> str:
    return f"WITH {_done_cte(alias)} {_insert_execution_from_sql(alias, 'done')}"


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
    params += _prep_row(Execution, EXECUTION_FIELDS, execution, connection)
    with _cursor(connection) as cursor:
        cursor.execute(_succeed_with_execution_sql(connection.alias), params)
        return cursor.rowcount == 1


def can_succeed_and_claim() -> bool:
    """Whether :func:`succeed_and_claim` is available (PostgreSQL: data-modifying CTEs)."""
    return connections[_db()].vendor == "postgresql"


@cache
def _succeed_and_claim_sql(alias: str) -> str:
    qn = connections[alias].ops.quote_name
    return (
        f"WITH {_done_cte(alias)}, logged AS ({_insert_execution_from_sql(alias, 'done')}), "
        f"claimed AS ({_claim_sql(alias)} AS {qn('last_execution')}) "
        "SELECT (SELECT COUNT(*) FROM done), claimed.* FROM (SELECT 1) AS one LEFT JOIN claimed ON TRUE"
    )


def succeed_and_claim(job: Job, result: Any, now: Any, execution: Execution, next_id: str,
                      worker_id: str, started: Any) -> tuple[bool, Job | None]:
    """Record a success with its Execution row and claim the next job, in one statement
    (PostgreSQL only; see :func:`can_succeed_and_claim`).

    Returns whether the success was this attempt's, and the claimed job (``None`` if
    ``next_id`` is not claimable), as :func:`succeed_with_execution` and :func:`claim_job`;
    ``started`` is the claimed job's start time.
    """
    connection = connections[_db()]
    when = _prep(Job, "started_at", started, connection)
    params = _succeed_params(job, result, now, connection)
    params += _prep_row(Execution, EXECUTION_FIELDS, execution, connection)
    params += _claim_params(next_id, worker_id, when, connection)
    with _cursor(connection) as cursor:
        cursor.execute(_succeed_and_claim_sql(connection.alias), params)
        row = cursor.fetchone()
    # The claim matched no row if its id column is NULL (never otherwise).
    return bool(row[0]), (_claimed(row[1:], connection) if row[1] is not None else None)


def insert_execution(execution: Execution) -> None:
    """Write an attempt's Execution row (its id is not read back)."""
    connection = connections[_db()]
    params = _prep_row(Execution, EXECUTION_FIELDS, execution, connection)
    with _cursor(connection) as cursor:
        cursor.execute(_insert_sql(Execution, connection.alias), params)


#: What every job built by ``JobManager.build()`` without a parent, entity or delay holds
#: in these columns. :func:`insert_job` writes them as SQL constants: fewer parameters
#: to prepare, send and adapt. A job holding anything else gets the full ``INSERT``.
FRESH_JOB: dict[str, Any] = {
    "result": None, "error": "", "progress": 0, "progress_message": "", "stage": "", "entity_id": None,
    "parent_id": None, "has_dependents": False, "attempts": 0, "run_after": None, "worker_id": "",
    "started_at": None, "finished_at": None,
}


def _constant(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if value == "":
        return "''"
    raise ValueError(f"No SQL constant for {value!r}")


_FRESH_VARYING = [f for f in JOB_FIELDS if f.attname not in FRESH_JOB]


def insert_job(job: Job, using: str) -> None:
    """Insert a new job built by ``JobManager.build()``; like ``save(force_insert=True)``
    without the per-call compilation (and without ``pre_save``/``post_save``: listen
    to ``job_enqueued`` instead)."""
    connection = connections[using]
    if all(getattr(job, name) == value for name, value in FRESH_JOB.items()):
        sql, params = _insert_sql(Job, connection.alias, True), _prep_row(Job, _FRESH_VARYING, job, connection)
    else:
        sql, params = _insert_sql(Job, connection.alias), _prep_row(Job, JOB_FIELDS, job, connection)
    with _cursor(connection) as cursor:
        cursor.execute(sql, params)
    job._state.adding = False
    job._state.db = using
