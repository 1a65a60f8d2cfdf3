"""The fast path of the hot transitions: enqueue, and the worker's claim, success and
Execution row, as the named statements of ``queries.sql``.

Compiling a queryset costs more than running its statement here, so the
statements every job needs are rendered once per database alias from the models'
metadata and run through Django's cursor. Each has an ORM twin in the transition
that uses it (:func:`enabled` says which runs; :func:`orm_only` forces the ORM, as
the property test does). Values go through each field's
``get_db_prep_save`` and rows come back through the same converters the ORM uses,
so SQLite and PostgreSQL behave exactly as with querysets.

On PostgreSQL with psycopg 3 they are also prepared on the server (see
:func:`_cursor`): planning an ``UPDATE`` of a table with this many indexes costs
more than running it. ``JOBQUEUE["PREPARED_STATEMENTS"] = False`` turns that off
(needed behind PgBouncer's transaction pooling before 1.21).
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from types import SimpleNamespace
from typing import Any, cast

from django.db import OperationalError, connections, router, transaction
from django.db.models import Field, Model

from .. import constants
from ..conf import settings
from ..ids import made_at_ms
from ..managers import build_instance
from ..models import FRESH_JOB, Execution, Job
from ..states import QUEUED_TEXT, RUNNING_TEXT, SCHEDULED_TEXT, SUCCEEDED_TEXT
from . import spinwait

try:
    import psycopg
except ImportError:  # psycopg2, or no PostgreSQL driver at all
    psycopg = None  # type: ignore[assignment]


def _db() -> str:
    return router.db_for_write(Job)


EXECUTION_FIELDS = [f for f in Execution._meta.concrete_fields if not f.primary_key]
JOB_FIELDS = list(Job._meta.concrete_fields)
_FRESH_VARYING = [f for f in JOB_FIELDS if f.attname not in FRESH_JOB]


def _parse(text: str) -> dict[str, str]:
    """The statements of ``queries.sql`` by name, comments dropped."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("-- name: "):
            current = queries.setdefault(line[len("-- name: "):].strip(), [])
        elif current is not None and line.strip() and not line.lstrip().startswith("--"):
            current.append(line.strip())
    return {name: " ".join(lines) for name, lines in queries.items()}


QUERIES = _parse(resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8"))


class _Table:
    """A model's quoted names for a template: ``{job.status}``, ``{job.table}``, ``{job.columns}``..."""

    def __init__(self, model: type[Model], fields: list[Any], conn: Any):
        qn = conn.ops.quote_name
        self.table = qn(model._meta.db_table)
        for f in model._meta.concrete_fields:
            setattr(self, f.attname, qn(str(f.column)))
        self.columns = ", ".join(qn(str(f.column)) for f in fields)
        self.marks = ", ".join("%s" for _ in fields)
        # A parameter in a SELECT list has no column to take its type from.
        self.typed_marks = ", ".join(f"CAST(%s AS {f.cast_db_type(conn)})" for f in fields)
        if model is Job:
            self.fresh_marks = ", ".join(
                _constant(FRESH_JOB[f.attname]) if f.attname in FRESH_JOB else "%s" for f in fields
            )


@cache
def statement(name: str, alias: str) -> str:
    """The statement ``name`` of ``queries.sql``, rendered for database ``alias``."""
    conn = connections[alias]
    names = {"job": _Table(Job, JOB_FIELDS, conn), "execution": _Table(Execution, EXECUTION_FIELDS, conn)}
    rendered: dict[str, str] = {}
    for query, text in QUERIES.items():  # in file order: a statement may use those above it
        rendered[query] = text.format(q=SimpleNamespace(**rendered), const=constants, **names)
        if query == name:
            return rendered[query]
    raise KeyError(f"No statement {name!r} in queries.sql")


@contextmanager
def _cursor(connection: Any) -> Iterator[Any]:
    """A cursor for one hot statement, whose ``execute`` prepares it on PostgreSQL.

    With psycopg 3 this is a server-side-binding cursor on Django's own connection
    (same transaction, same adapters, errors wrapped as Django's), and each statement
    is prepared on its first run (:func:`_fast_cursor`). Django's cursor is used instead
    when statements are being logged or wrapped (``DEBUG``, ``execute_wrapper()``), on
    other drivers and databases, when ``PREPARED_STATEMENTS`` is off, and when the
    database's ``OPTIONS`` ask for no preparing.
    """
    cursor = _fast_cursor(connection)
    if cursor is None:
        with connection.cursor() as cursor:
            yield cursor
        return
    with connection.wrap_database_errors:
        yield cursor


def _fast_cursor(connection: Any) -> Any:
    """The preparing cursor of :func:`_cursor`, its connection checked as Django checks
    one before a query; ``None`` where Django's own cursor is to be used (see there)."""
    if not _prepares(connection):
        return None
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    return _preparing_cursor(connection, connection.connection)


def _prepares(connection: Any) -> bool:
    """Whether the hot statements run through the preparing cursor on ``connection``."""
    if (
        psycopg is None
        or connection.vendor != "postgresql"
        or connection.execute_wrappers
        or connection.queries_logged
        or not settings.PREPARED_STATEMENTS
    ):
        return False
    options = connection.settings_dict.get("OPTIONS", {})
    # The project asked for no preparing: "prepare_threshold": None, or server-side
    # binding with Django's default (None) threshold.
    return not (options.get("prepare_threshold") is None and (
        "prepare_threshold" in options or options.get("server_side_binding") is True
    ))


def _preparing_cursor(connection: Any, raw: Any) -> Any:
    """The preparing cursor of psycopg connection ``raw``, made on its first statement and
    kept for the connection's life (a cursor per statement was a measurable part of a
    worker's time per job); one is made anew if the time zones it was made for changed."""
    zone = raw.pgconn.parameter_status(b"TimeZone")
    kept = getattr(raw, "_jobqueue_cursor", None)
    if kept is not None and kept[0] is connection.timezone and kept[1] == zone and not kept[2].closed:
        return kept[2]
    if raw.prepare_threshold is None:
        # Django's default: preparing off. Its own cursors bind on the client and never
        # prepare, so only this cursor's statements are affected; a threshold this high
        # never prepares anything else.
        raw.prepare_threshold = _NEVER_AUTOMATICALLY
    cursor = _PreparingCursor(raw)
    if connection.timezone is dt.timezone.utc and raw.info.timezone is dt.timezone.utc:
        # Django loads timestamptz with a Python loader that only sets the tzinfo it
        # already has here (UTC): psycopg's own loader (C, with its binary package)
        # gives the same datetime, ~15 times faster, for a few per job.
        cursor.adapters.register_loader(_TIMESTAMPTZ, _FAST_TZ_LOADER)
    # Kept on the connection itself: the Django time zone and session ``TimeZone`` the
    # cursor was made for, and the cursor (they go with the connection).
    raw._jobqueue_cursor = (connection.timezone, zone, cursor)
    return cursor


#: psycopg's prepare threshold on a connection Django left unprepared: only statements run
#: with ``prepare=True`` (these) are prepared.
_NEVER_AUTOMATICALLY = 2**31
#: Set below where psycopg 3 is installed (see there).
_CAN_SPIN = _CAN_PIPELINE = False

if psycopg is not None:

    #: psycopg's readiness values for nothing, read, write and both (see spinwait).
    _READY = (psycopg.waiting.Ready.NONE, psycopg.waiting.Ready.R, psycopg.waiting.Ready.W,
              psycopg.waiting.Ready.RW)
    #: Whether this psycopg lets a statement's wait be polled (spinwait): it drives each
    #: statement as a generator of waits, ``Cursor._execute_gen`` (psycopg 3.1 to 3.3).
    _CAN_SPIN = spinwait.available() and hasattr(psycopg.Cursor, "_execute_gen")
    #: Whether this psycopg and its libpq can pipeline statements (libpq 14 or later):
    #: a claim and its wait for the job's row go in one round trip (see :func:`claim_job`).
    _CAN_PIPELINE = bool(getattr(psycopg.Pipeline, "is_supported", lambda: False)())

    class _PreparingCursor(psycopg.Cursor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._spin = spinwait.SpinState()
            self._transformer: Any = None

        @property
        def transformer(self) -> Any:
            """The transformer that dumps and loads with this cursor's adapters the
            statements run through libpq's own calls (:func:`_pushed_insert`,
            :func:`_claim_after_insert`), made on first use."""
            if self._transformer is None:
                self._transformer = psycopg.adapt.Transformer(self)
            return self._transformer

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, prepare=True)

        def execute_polling(self, query: Any, params: Any = None) -> Any:
            """``execute``, its answer waited for polling first (see spinwait): for an
            enqueue's ``INSERT`` (one pushed as it is sent runs through
            :func:`_pushed_insert`, polled alike), whose wait is mostly the commit's WAL
            flush (the CPU is idle meanwhile). The worker's statements keep the database's
            CPU busy for most of theirs, and a drain measured no faster with them polled."""
            budget = settings.SPIN_WAIT_MICROSECONDS
            if not (budget and _CAN_SPIN and self._spin.should_spin()):
                return super().execute(query, params, prepare=True)
            conn = self._conn
            with conn.lock:
                conn.wait(spinwait.spinning(self._execute_gen(query, params, prepare=True), conn.pgconn.socket,
                                            budget / 1e6, self._spin, _READY))
            return self

    from psycopg.types.json import Jsonb

    # What the statements run through libpq's own calls wait for, read and dump with (as psycopg's do).
    _WAIT_R, _WAIT_RW, _READY_R = psycopg.waiting.Wait.R, psycopg.waiting.Wait.RW, psycopg.waiting.Ready.R
    _AUTO = psycopg.adapt.PyFormat.AUTO
    _PIPELINE_SYNC, _FATAL_ERROR = psycopg.pq.ExecStatus.PIPELINE_SYNC, psycopg.pq.ExecStatus.FATAL_ERROR
    _SQLSTATE = psycopg.pq.DiagnosticField.SQLSTATE
    #: The SQLSTATEs of a lock timeout and of a prepared statement the session does not have.
    _LOCK_NOT_AVAILABLE, _NO_SUCH_STATEMENT = b"55P03", b"26000"

    _TIMESTAMPTZ = psycopg.postgres.types["timestamptz"].oid
    #: psycopg's default timestamptz loader: aware datetimes in the session's time zone.
    _FAST_TZ_LOADER = cast(Any, psycopg.adapters.get_loader(_TIMESTAMPTZ, psycopg.pq.Format.TEXT))


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
        return value if value is None or convert is _same else convert(value)
    field = cast(Field, model._meta.get_field(name))
    return field.get_db_prep_save(value, connection)


#: Per list of fields (a module constant here) and database: each field's attname, the
#: field, and its cheap value types and conversion (:func:`_fast_prep`), looked up once.
_plans: dict[tuple[int, str], tuple[list[Any], list[tuple[str, Any, tuple[type, ...], Any]]]] = {}


def _plan(model: type[Model], fields: list[Any], alias: str) -> list[tuple[str, Any, tuple[type, ...], Any]]:
    entry = _plans.get((id(fields), alias))
    if entry is None or entry[0] is not fields:
        entry = (fields, [(f.attname, f, *_fast_prep(model, f.name, alias)) for f in fields])
        _plans[(id(fields), alias)] = entry
    return entry[1]


def _prep_row(model: type[Model], fields: list[Any], obj: Model, connection: Any,
              prepared: dict[str, Any] | None = None) -> list[Any]:
    """:func:`_prep` of each of ``fields`` of ``obj``, in order (the hot loop of every
    insert); ``prepared`` holds values already prepared, by attname.

    Values are read from the instance's ``__dict__`` where they are (no field of a Job or
    an Execution has a descriptor that changes a value as it is read: a foreign key's id
    goes through one that only reads it), else as attributes (a deferred field)."""
    row = []
    values = obj.__dict__
    for attname, field, kinds, convert in _plan(model, fields, connection.alias):
        if prepared is not None and attname in prepared:
            row.append(prepared[attname])
            continue
        value = values[attname] if attname in values else getattr(obj, attname)
        kind = type(value)
        if kind in kinds and (kind is not dt.datetime or value.tzinfo is not None):
            row.append(value if value is None or convert is _same else convert(value))
        else:
            row.append(field.get_db_prep_save(value, connection))
    return row


@cache
def _converters(model: type[Model], alias: str) -> tuple[tuple[str, ...], list[tuple[int, Any, list[Any], bool]]]:
    """The attnames of ``model``'s concrete fields, in order, and the ORM's converters of
    the few that have any on database ``alias`` (by position), each with whether they
    leave ``None`` as it is (then a NULL is not handed to them: a job's ``result`` and
    ``trace_context`` mostly are)."""
    connection = connections[alias]
    names, converting = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        col = field.get_col(model._meta.db_table)
        names.append(field.attname)
        funcs = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
        if funcs:
            keeps_none = all(func(None, col, connection) is None for func in funcs)
            converting.append((index, col, funcs, keeps_none))
    return tuple(names), converting


def _from_row(model: type[Model], row: Any, connection: Any) -> Any:
    """Build a model instance from a ``RETURNING`` row, converting values as the ORM does."""
    names, converting = _converters(model, connection.alias)
    values = list(row)
    for index, col, funcs, keeps_none in converting:
        value = values[index]
        if value is None and keeps_none:
            continue
        for func in funcs:
            value = func(value, col, connection)
        values[index] = value
    return build_instance(model, dict(zip(names, values, strict=True)), db=connection.alias)


_orm_only: ContextVar[bool] = ContextVar("jobqueue_orm_only", default=False)


def enabled(using: str | None = None, connection: Any = None) -> bool:
    """Whether the transitions take the fast path on this database (it needs ``RETURNING``);
    ``connection``: ``connections[using]``, if the caller has it."""
    if _orm_only.get():
        return False
    return bool((connection or connections[using or _db()]).features.can_return_rows_from_bulk_insert)


def can_fuse() -> bool:
    """Whether one statement can hold several changes (PostgreSQL's data-modifying CTEs)."""
    return enabled() and connections[_db()].vendor == "postgresql"


@contextmanager
def orm_only() -> Iterator[None]:
    """Within this block every transition takes its ORM path."""
    token = _orm_only.set(True)
    try:
        yield
    finally:
        _orm_only.reset(token)


def _run(name: str, params: list[Any], connection: Any, *, returns_row: bool = False,
         polling: bool = False, cursor: Any = None) -> tuple[int, Any]:
    """Run statement ``name``; returns its row count and, if it ``returns_row``, its first
    row. (Said by the caller: asking the cursor for its ``description`` builds an object
    per column on every call, a measurable part of a worker's time per job.) ``polling``:
    wait for the answer polling first, where the fast cursor can (see spinwait).
    ``cursor``: the connection's :func:`_fast_cursor`, if the caller has it."""
    # As _cursor() does, without a generator per statement (nor its checks made twice).
    if cursor is None:
        cursor = _fast_cursor(connection)
    if cursor is None:
        with connection.cursor() as cursor:
            return _execute(cursor.execute, cursor, name, params, connection, returns_row)
    with connection.wrap_database_errors:
        return _execute(cursor.execute_polling if polling else cursor.execute, cursor, name, params, connection,
                        returns_row)


def _execute(execute: Any, cursor: Any, name: str, params: list[Any], connection: Any,
             returns_row: bool) -> tuple[int, Any]:
    execute(statement(name, connection.alias), params)
    return cursor.rowcount, (cursor.fetchone() if returns_row else None)


def claim_job(job_id: str, worker_id: str, now: Any) -> Job | None:
    """``claim``: queued|scheduled -> running, returning the row; the job's highest
    Execution number so far is set on it as ``last_execution``.

    On PostgreSQL the claim first waits for the job's row if it is being written as the
    worker asks (its push is sent while its ``INSERT`` runs: see :func:`insert_job`), in
    the same round trip; a job whose row is still not there after :data:`INSERT_WAIT_MS`
    is not claimed (the caller gives it back, see ``recovery.give_back``). A job whose id
    was made more than :data:`INSERTED_AFTER_MS` ago is claimed without the wait."""
    connection = connections[_db()]
    pk = _as_uuid(job_id)  # parsed once: the claim, its wait and the id's time all read it
    params = _claim_params(pk, worker_id, _prep(Job, "started_at", now, connection), connection)
    cursor = _fast_cursor(connection) if _CAN_PIPELINE else None
    if cursor is None or connection.in_atomic_block or not _may_be_inserting(pk):
        _, row = _run("claim", params, connection, returns_row=True)
    else:
        row = _claim_after_insert(cursor, pk, params, connection)
    return _claimed(row, connection) if row else None


def _as_uuid(job_id: Any) -> Any:
    """``job_id`` as a UUID, if it is one or the text of one; else unchanged (the id
    field's own conversion then says what is wrong with it)."""
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(job_id)
    except (TypeError, ValueError, AttributeError):
        return job_id


def _claim_after_insert(cursor: Any, job_id: Any, params: list[Any], connection: Any) -> Any:
    """``wait_for_insert`` and ``claim`` pipelined in one implicit transaction (each
    statement sees what committed before it started); the claimed row, or ``None``.

    Both go out in one write with their ``Sync``, and their answers are read, through
    libpq's own calls (:func:`_pipelined`): psycopg's pipeline wraps each statement and
    each answer in dozens of Python calls, all on the way from a worker's wake to its
    job's start. They are prepared on the connection as :func:`_prepared` says; their
    parameters go as text, typed by the server from the statements as it types psycopg's
    strings."""
    raw = cursor.connection
    alias = connection.alias
    wait = [b"%d" % key for key in lock_keys(job_id)]
    wait.append(_INSERT_WAIT_BYTES)
    claim = [_as_text(value) for value in params]
    with connection.wrap_database_errors:
        results = _exchanged(raw, lambda again: raw.wait(_pipelined(raw, [
            (*_prepared(raw, "wait_for_insert", alias), wait), (*_prepared(raw, "claim", alias), claim)])))
        if any(_sqlstate(result) == _LOCK_NOT_AVAILABLE for result in results):
            return None  # the row's INSERT is still running (the claim behind the wait was not run)
        _check(raw, results)
        answer = results[-1]
        if not answer.ntuples:
            return None
        tx = cursor.transformer
        tx.set_pgresult(answer)
        return tx.load_row(0, tuple)


def _pushed_insert(cursor: Any, name: str, params: list[Any], connection: Any, sent: Callable[[], Any],
                   meanwhile: Callable[[], Any] | None) -> None:
    """Run ``name``, an ``INSERT`` of :func:`insert_job` whose push goes as soon as it is
    sent (``sent``), through libpq's own calls as the claim is: its parameters dumped by
    the cursor's adapters in one call, the statement prepared as :func:`_prepared` says
    (for each set of parameter types, as psycopg prepares), sent, ``sent`` called, and the
    answer polled for as :meth:`_PreparingCursor.execute_polling` polls (``meanwhile``
    too). psycopg's cursor ran some forty Python calls before the statement left."""
    raw = cursor.connection
    alias = connection.alias
    tx = cursor.transformer
    with connection.wrap_database_errors:
        values = tx.dump_sequence(params, [_AUTO] * len(params))
        types, formats = tx.types, tx.formats

        def attempt(again: bool) -> list[Any]:
            statement_name, query = _prepared(raw, name, alias, types)
            if query is not None:
                _check(raw, raw.wait(_answers(raw.pgconn, raw.pgconn.send_prepare, statement_name, query,
                                              param_types=types)))
            # Run again, the statement is sent again, not the push (it went the first time).
            gen = spinwait.announcing(_answers(raw.pgconn, raw.pgconn.send_query_prepared, statement_name,
                                               values, param_formats=formats), _nothing if again else sent)
            budget = settings.SPIN_WAIT_MICROSECONDS
            if budget and spinwait.available() and cursor._spin.should_spin():
                gen = spinwait.spinning(gen, raw.pgconn.socket, budget / 1e6, cursor._spin, _READY, meanwhile)
            return cast(list[Any], raw.wait(gen))

        _check(raw, _exchanged(raw, attempt))


def _nothing() -> None:
    pass


def _check(raw: Any, results: list[Any]) -> None:
    """Raise the error of the first of ``results`` that failed, as psycopg raises it."""
    for result in results:
        if result.status == _FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=raw.info.encoding)


def _as_text(value: Any) -> bytes:
    """A claim parameter as the text PostgreSQL reads it as: a string, a timestamp (aware,
    or naive in the session's time zone, as psycopg sends one) or a UUID."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dt.datetime):
        return value.isoformat().encode()
    if isinstance(value, uuid.UUID):
        return str(value).encode()
    raise TypeError(f"No text form for a claim parameter of type {type(value).__name__}")


def _sqlstate(result: Any) -> bytes | None:
    return result.error_field(_SQLSTATE) if result.status == _FATAL_ERROR else None


@cache
def _numbered(name: str, alias: str) -> bytes:
    """Statement ``name`` with its ``%s`` as ``$1``, ``$2``… (and ``%%`` as ``%``), encoded,
    for libpq's own prepare."""
    return _numbering(statement(name, alias))


def _numbering(text: str) -> bytes:
    count = iter(range(1, 100_000))
    return re.sub(r"%[s%]", lambda m: "%" if m.group() == "%%" else f"${next(count)}", text).encode()


_generations = itertools.count(1)


def _prepared(raw: Any, name: str, alias: str, types: Any = None,
              text: Callable[[], bytes] | None = None) -> tuple[bytes, bytes | None]:
    """The name under which statement ``name`` (its parameters of ``types``; ``None``: typed
    by the server) is prepared on psycopg connection ``raw``'s session, and, the first time,
    its text to prepare first (``text()``, for a statement not in ``queries.sql`` as it is).
    Names are new to the process, so none is ever prepared twice: a statement named but
    never prepared (its first run failed on the way) is one the session does not have, as
    after ``DEALLOCATE ALL`` (see :func:`_lost`)."""
    names: dict[Any, bytes] | None = getattr(raw, "_jobqueue_statements", None)
    if names is None:
        names = raw._jobqueue_statements = {}
    key = (name, alias, types)
    prepared = names.get(key)
    if prepared is not None:
        return prepared, None
    prepared = names[key] = b"jobqueue_%d" % next(_generations)
    return prepared, text() if text is not None else _numbered(name, alias)


def _exchanged(raw: Any, attempt: Callable[[bool], list[Any]]) -> list[Any]:
    """The answers of ``attempt(False)`` (an exchange of statements named by
    :func:`_prepared`), run holding psycopg connection ``raw``'s lock; if they say the
    session lost its statements (:func:`_lost`), those of ``attempt(True)``, which
    prepares them again under new names."""
    with raw.lock:
        results = attempt(False)
        if _lost(raw, results):
            results = attempt(True)
    return results


def _lost(raw: Any, results: list[Any]) -> bool:
    """Whether ``results`` say a statement named by :func:`_prepared` is not in the session
    (``DEALLOCATE ALL``, a pooler's reset): then every name is forgotten, to be prepared
    again under new ones."""
    if any(_sqlstate(result) == _NO_SUCH_STATEMENT for result in results):
        raw._jobqueue_statements = {}
        return True
    return False


def _answers(pgconn: Any, send: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The generator, for psycopg's ``Connection.wait``, that sends one statement (``send``
    of ``pgconn``, with ``args``) and returns its answers, as psycopg's own generators do."""
    send(*args, **kwargs)
    yield from _flushed(pgconn)
    results: list[Any] = []
    while True:
        while pgconn.is_busy():
            while not (yield _WAIT_R):
                continue
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _flushed(pgconn: Any) -> Any:
    """Wait until what was sent on ``pgconn`` is all written (reading meanwhile)."""
    while pgconn.flush():
        while not (ready := (yield _WAIT_RW)):
            continue
        if ready & _READY_R:
            pgconn.consume_input()


def _pipelined(raw: Any, statements: list[tuple[bytes, bytes | None, list[Any]]],
               typed: tuple[Any, Any] | None = None) -> Any:
    """The generator, for psycopg's ``Connection.wait``, that sends ``statements`` (each
    a name, its text to prepare first or ``None``, and its parameters as text) in one
    pipeline with one ``Sync``, and returns every answer but the ``Sync``'s, in order.
    ``typed``: the parameter types and formats of the last statement, whose parameters
    were dumped by a transformer (see :func:`_recorded`). Written after psycopg's own
    pipeline generator: answers are read as they come, a statement's end being a ``None``
    from ``get_result``."""
    pgconn = raw.pgconn
    types, formats = typed or (None, None)
    last = len(statements) - 1
    pgconn.enter_pipeline_mode()
    try:
        for i, (name, query, _) in enumerate(statements):
            if query is not None:
                pgconn.send_prepare(name, query, param_types=types if i == last else None)
        for i, (name, _, values) in enumerate(statements):
            pgconn.send_query_prepared(name, values, param_formats=formats if i == last else None)
        pgconn.pipeline_sync()
        yield from _flushed(pgconn)
        results: list[Any] = []
        while True:
            while not (yield _WAIT_R):
                continue
            pgconn.consume_input()
            came = False
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    if not came:
                        break
                    came = False
                elif result.status == _PIPELINE_SYNC:
                    return results
                else:
                    results.append(result)
                    came = True
    finally:
        try:
            pgconn.exit_pipeline_mode()
        except psycopg.Error:  # answers left unread (interrupted): the connection is of no more use
            raw.close()


def may_be_inserting(job_id: Any, using: str | None = None) -> bool:
    """Whether a claim of ``job_id`` may have come before its row's ``INSERT`` (one whose
    push went as it was sent: PostgreSQL only) had committed, or even run."""
    return connections[using or _db()].vendor == "postgresql" and _may_be_inserting(job_id)


def _may_be_inserting(job_id: uuid.UUID | str) -> bool:
    """Whether ``job_id``'s row may still be being inserted: its id holds no time, or a
    time less than :data:`INSERTED_AFTER_MS` ago. (A clock of the enqueuer's behind the
    worker's only makes a claim miss a row, which the give-back then waits for.)"""
    made = made_at_ms(job_id)
    return made is None or time.time() * 1000 - made < INSERTED_AFTER_MS


#: Milliseconds after its id was made by which a job pushed during its ``INSERT`` has
#: certainly been written (the id is made just before the statement): a backlog's claims
#: do not wait.
INSERTED_AFTER_MS = 10_000
#: Milliseconds a claim (or a give-back) waits at most for a job's row being inserted:
#: an ``INSERT`` holds it for its own run and commit only.
INSERT_WAIT_MS = 2000
_INSERT_WAIT = str(INSERT_WAIT_MS)
_INSERT_WAIT_BYTES = _INSERT_WAIT.encode()
#: The first key of the advisory locks taken on jobs' ids ("jobq"): apart from other users'.
LOCK_SPACE = 0x6A6F6271


def lock_keys(job_id: Any) -> tuple[int, int]:
    """The two keys of job ``job_id``'s advisory lock (its id's last 31 bits: two jobs that
    share them only wait for each other's commit)."""
    value = job_id.int if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id)).int
    return LOCK_SPACE, value & 0x7FFFFFFF


def wait_for_insert(job_id: Any, using: str | None = None) -> bool:
    """Wait until a job's row being inserted (see :func:`insert_job`) has committed or
    rolled back, for at most :data:`INSERT_WAIT_MS` (PostgreSQL; elsewhere nothing waits,
    nor for a job whose id was made more than :data:`INSERTED_AFTER_MS` ago, as in
    :func:`claim_job`). Returns False if it was still being written then."""
    connection = connections[using or _db()]
    if not may_be_inserting(job_id, connection.alias):
        return True
    params = [*lock_keys(job_id), _INSERT_WAIT]
    try:
        if connection.in_atomic_block:
            with transaction.atomic(using=connection.alias):  # a savepoint: a timeout spoils nothing
                _run("wait_for_insert", params, connection)
        else:
            _run("wait_for_insert", params, connection)  # its own transaction: the lock is let go at once
    except OperationalError as exc:
        if psycopg is not None and isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
            return False
        raise
    return True


def _claimed(row: Any, connection: Any) -> Job:
    """The job of a claim's ``RETURNING`` row, with ``last_execution`` from its last column."""
    job = _from_row(Job, row[:-1], connection)
    job.last_execution = row[-1] or 0
    return job


def _claim_params(job_id: Any, worker_id: str, when: Any, connection: Any) -> list[Any]:
    return [
        RUNNING_TEXT,
        when,
        worker_id,
        when,
        _prep(Job, "id", job_id, connection),
        QUEUED_TEXT,
        SCHEDULED_TEXT,
    ]


def mark_succeeded(job: Job, result: Any, now: Any) -> bool:
    """``succeed``: running -> succeeded, guarded by this attempt."""
    connection = connections[_db()]
    count, _ = _run("succeed", _succeed_params(job, result, now, connection), connection)
    return bool(count == 1)


def _succeed_params(job: Job, result: Any, now: Any, connection: Any) -> list[Any]:
    when = _prep(Job, "finished_at", now, connection)
    return [
        SUCCEEDED_TEXT,
        _prep(Job, "result", result, connection),
        when,
        when,
        _prep(Job, "id", job.pk, connection),
        RUNNING_TEXT,
        job.attempts,
    ]


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
    count, _ = _run("succeed_with_execution", params, connection)
    return bool(count == 1)


#: The columns of a success in ``record_and_claim``'s ``succeeded`` rows, in order.
_SUCCEEDED = ("id", "attempts", "result", "started_at", "finished_at")


@cache
def _record_statement(successes: int, alias: str) -> str:
    """``record_and_claim`` with rows of parameters for ``successes`` successes."""
    conn = connections[alias]
    fields = [cast(Field, Job._meta.get_field(name)) for name in _SUCCEEDED]
    succeeded = "(" + ", ".join(f"CAST(%s AS {f.cast_db_type(conn)})" for f in fields) + ")"
    executions = "(" + _Table(Execution, EXECUTION_FIELDS, conn).typed_marks + ")"
    text = statement("record_and_claim", alias)
    return (text.replace("[succeeded]", ", ".join([succeeded] * successes))
            .replace("[executions]", ", ".join([executions] * successes)))


def record_and_claim(successes: list[tuple[Job, Any, Execution]], next_ids: list[str], worker_id: str,
                     started: Any) -> tuple[set[str], list[Job]]:
    """Record ``successes`` (each a job, its storable result and its attempt's filled-in
    Execution; the job's ``started_at`` is when it started) and claim the jobs of
    ``next_ids``, in one statement (PostgreSQL only; see :func:`can_fuse`). ``started``
    is the claimed jobs' start time.

    Returns the ids of the jobs whose success was this attempt's (the others had moved
    on: see ``attempt.not_ours``) and the claimed jobs, in no particular order (a job
    no longer claimable is not among them).
    """
    connection = connections[_db()]
    params: list[Any] = []
    executions: list[Any] = []
    for job, result, execution in successes:
        params += [
            _prep(Job, "id", job.pk, connection),
            job.attempts,
            _prep(Job, "result", result, connection),
            _prep(Job, "started_at", job.started_at, connection),
            _prep(Job, "finished_at", execution.finished_at, connection),
        ]
        executions += _prep_row(Execution, EXECUTION_FIELDS, execution, connection)
    params += [SUCCEEDED_TEXT, RUNNING_TEXT, *executions]
    when = _prep(Job, "started_at", started, connection)
    params += [RUNNING_TEXT, when, worker_id, when, [uuid.UUID(i) for i in next_ids],
               QUEUED_TEXT, SCHEDULED_TEXT]
    rows = _recorded(len(successes), params, connection)
    done = {str(pk) for pk in rows[0][0]}
    # Nothing was claimed if the one row's id column is NULL (never otherwise).
    return done, [_claimed(row[1:], connection) for row in rows if row[1] is not None]


def _recorded(successes: int, params: list[Any], connection: Any) -> list[Any]:
    """The rows of ``record_and_claim`` for ``successes`` successes, run with ``params``.

    Outside a transaction on PostgreSQL it goes through libpq's own calls, as the claim
    does (:func:`_pipelined`), behind ``generic_plans`` in the same implicit transaction:
    left to choose, PostgreSQL planned this statement afresh for every batch (its custom
    plan seemed cheaper than the generic one), which took longer than running it; the
    generic plan is the same index lookups. The setting ends with the transaction."""
    cursor = _fast_cursor(connection) if _CAN_PIPELINE and not connection.in_atomic_block else None
    if cursor is None:
        with _cursor(connection) as cursor:
            cursor.execute(_record_statement(successes, connection.alias), params)
            return cast(list[Any], cursor.fetchall())
    raw = cursor.connection
    alias = connection.alias
    tx = cursor.transformer
    with connection.wrap_database_errors:
        values = tx.dump_sequence(params, [_AUTO] * len(params))
        typed = (tx.types, tx.formats)
        results = _exchanged(raw, lambda again: raw.wait(_pipelined(raw, [
            (*_prepared(raw, "generic_plans", alias), []),
            (*_prepared(raw, f"record_and_claim {successes}", alias, typed[0],
                        lambda: _numbering(_record_statement(successes, alias))), values),
        ], typed)))
        _check(raw, results)
        answer = results[-1]
        tx.set_pgresult(answer)
        return cast(list[Any], tx.load_rows(0, answer.ntuples, tuple))


def insert_execution(execution: Execution) -> None:
    """Write an attempt's Execution row (its id is not read back)."""
    connection = connections[_db()]
    _run("insert_execution", _prep_row(Execution, EXECUTION_FIELDS, execution, connection), connection)


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


def pushing_cursor(connection: Any) -> Any:
    """The fast cursor through which an ``INSERT`` of a job on ``connection`` can push
    the job while it runs (:func:`insert_job`'s ``pushed``), else ``None``: PostgreSQL
    through the fast cursor (psycopg 3), in autocommit (the statement is the transaction).
    The connection is checked as Django checks one before a query (see :func:`_fast_cursor`)."""
    if connection.in_atomic_block or not enabled(connection.alias, connection):
        return None
    cursor = _fast_cursor(connection)
    return cursor if cursor is not None and connection.autocommit else None


def insert_job(job: Job, using: str, connection: Any = None, pushed: Callable[[], Any] | None = None,
               meanwhile: Callable[[], Any] | None = None, cursor: Any = None) -> None:
    """``enqueue``: insert a new job built by ``JobManager.build()``; like
    ``save(force_insert=True)`` without the per-call compilation (and without
    ``pre_save``/``post_save``: listen to ``job_enqueued`` instead). ``connection``:
    ``connections[using]``, if the caller has it.

    ``pushed`` (through the :func:`pushing_cursor` given as ``cursor``) pushes the job,
    and is called as soon as the ``INSERT`` is sent: the job's wake-up travels to a
    worker while the row is written and its commit flushed, instead of after. The
    statement holds the job's advisory lock until it commits; a worker's claim waits for
    that lock first (see :func:`claim_job`), so a worker still never sees the row
    uncommitted, nor a row rolled back. ``meanwhile`` gives the push's answer to read
    while the ``INSERT`` commits, if it comes then (see :func:`.spinwait.spinning`)."""
    connection = connection or connections[using]
    fresh = _fresh_values(job) == _FRESH_VALUES
    encoded = getattr(job, "_payload_json", None)
    prepared = None
    if encoded is not None and psycopg is not None and connection.vendor == "postgresql":
        # The payload's JSON, made (and checked) by build(): not made again (as COPY does).
        prepared = {"payload": Jsonb(encoded, dumps=_as_is)}
    params = _prep_row(Job, _FRESH_VARYING if fresh else JOB_FIELDS, job, connection, prepared)
    name = "insert_fresh_job" if fresh else "insert_job"
    if pushed is not None:
        params += lock_keys(job.pk)
        name += "_pushed"
    if pushed is not None:
        if cursor is None:
            raise TypeError("insert_job(pushed=...) takes the connection's pushing_cursor() as its cursor")
        _pushed_insert(cursor, name, params, connection, pushed, meanwhile)
    else:
        _run(name, params, connection, polling=True, cursor=cursor)
    job._state.adding = False
    job._state.db = using


_fresh_values = operator.attrgetter(*FRESH_JOB)
_FRESH_VALUES = _fresh_values(SimpleNamespace(**FRESH_JOB))

def _as_is(text: str) -> str:
    return text
