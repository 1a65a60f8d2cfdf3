"""A new job's push, sent without waiting for Redis's answer.

``enqueue()`` pushes a job once its row has committed (or, in autocommit on PostgreSQL,
while it commits, a worker's claim waiting for the commit: see
:func:`jobqueue.transitions.create.insert_plain`), so the push carries news, not the
record: a push that does not happen leaves the job queued in the database, and a
worker's reconcile pushes it (within about ``RECONCILE_SECONDS``). So ``enqueue()`` sends
the push script's call and returns; the answer is read before this thread's next use of
Redis (its next push, any :func:`~.connection.get_redis`, the end of a request, exit):
the thread always sees its own pushes, and a refusal is still seen, only later. (An
``enqueue()`` whose push went out during its ``INSERT`` reads the answer while that statement
commits, if it comes then (:func:`answer_reader`), else once the statement is done if it
has come by then: :func:`settle_if_answered`.)

An answer that says the push did not run (Redis restarted and lost its scripts:
``NOSCRIPT``) pushes the job again there, waiting this time. A connection that broke
before the answer came leaves the push's fate unknown (the answer may be what was lost,
and a worker may have taken the job since), so the job is put back only where Redis holds
it nowhere, as the reconcile does. Any other refusal is logged as
:func:`jobqueue.transitions.create.push_committed` logs an unreachable Redis.

Each thread holds one pooled connection while an answer is outstanding and between its
pushes; :func:`release` (connected to ``request_finished``) reads the answer and gives the
connection back, and so does the end of the thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import redis

from ..conf import settings
from ..logging import job_id_extra
from . import connection
from .keys import topic_keys
from .scripts import script

logger = logging.getLogger("jobqueue.engine")

#: The push script's keys (``push.lua``), in order.
PUSH_KEYS = ("queue", "seq", "entities", "leases", "scheduled", "schedprio", "wake", "metrics")


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _pack(prefix: bytes, tally: str, items: list[tuple[str, int, str | None]]) -> bytes:
    """The push script's call for ``items`` (``(job_id, priority, entity_id)``), after
    ``prefix`` (:meth:`_Held.prefix`: the command, the script and its keys)."""
    parts = [b"*%d\r\n" % (len(PUSH_KEYS) + 4 + 3 * len(items)), prefix, _bulk(tally.encode())]
    for job_id, priority, entity_id in items:
        parts += (_bulk(job_id.encode()), _bulk(b"%d" % priority), _bulk((entity_id or "").encode()))
    return b"".join(parts)


class _Held:
    """One thread's connection and the push whose answer it has not read yet."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pid = os.getpid()
        self.conn: Any = _connection(client.connection_pool)
        #: (topic, job id, priority, entity id, the same push made synchronously) of the push sent
        self.sent: tuple[str, str, int, str | None, Callable[[], Any]] | None = None
        #: What reading that push's answer raised, kept for :func:`settle` to act on (see
        #: :func:`answer_reader`).
        self.failure: redis.RedisError | None = None
        self.prefixes: dict[str, bytes] = {}

    def prefix(self, topic: str) -> bytes:
        """``EVALSHA <sha> 8 <keys…>`` for ``topic`` (under the current prefix), packed once."""
        k = topic_keys(topic)
        packed = self.prefixes.get(k.base)
        if packed is None:
            sha = script(self.client, "push").sha.encode()
            parts = [b"EVALSHA", sha, b"8", *(str(getattr(k, name)).encode() for name in PUSH_KEYS)]
            packed = b"".join(_bulk(part) for part in parts)
            self.prefixes[k.base] = packed
        return packed

    def give_back(self) -> None:
        """Return the connection to its pool, closed first if an answer is still unread
        (after a fork it is the parent's: left alone)."""
        conn, self.conn = self.conn, None
        if conn is None or self.pid != os.getpid():
            return
        if self.sent is not None:
            self.sent = self.failure = None
            conn.disconnect()
        self.client.connection_pool.release(conn)

    def __del__(self) -> None:  # the thread ended: nothing may be left unread on a pooled connection
        try:
            self.give_back()
        except Exception:  # noqa: BLE001 - at a thread's or interpreter's end, nothing to tell
            pass


def _connection(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py before 5.3 names the command
        return pool.get_connection("EVALSHA")


_local = threading.local()


def _held(client: redis.Redis) -> _Held:
    held: _Held | None = getattr(_local, "held", None)
    if held is not None and held.client is client and held.pid == os.getpid() and held.conn is not None:
        return held
    if held is not None:  # another client (settings changed), or the parent's connection after a fork
        _local.held = None
        held.give_back()
    held = _local.held = _Held(client)
    return held


def send(client: redis.Redis, topic: str, job_id: str, priority: int, entity_id: str | None, tally: str,
         push: Callable[[], Any]) -> None:
    """Send one queued job's push without waiting for its answer.

    ``push`` makes the same push synchronously: it runs instead where the connection
    fails as the call is sent (and raises :class:`redis.RedisError` as the push would),
    and again where the answer says the push never ran.
    """
    settle()
    held = _held(client)
    packed = _pack(held.prefix(topic), tally, [(job_id, priority, entity_id)])
    try:
        held.conn.send_packed_command([packed])
    except (redis.ConnectionError, redis.TimeoutError):
        held.conn.disconnect()
        push()
        return
    held.sent = (topic, job_id, priority, entity_id, push)
    connection.waiting.read = settle


def send_many(client: redis.Redis, topic: str, chunks: list[tuple[str, list[tuple[str, int, str | None]]]],
              push: Callable[..., Any]) -> None:
    """Push chunks of queued jobs of ``topic``, each ``(tally, [(job_id, priority,
    entity_id), ...])``, in one round trip on this thread's connection, the calls packed
    here: for thousands of ids, redis-py's packing of each argument was a tenth of
    ``enqueue_many()``. Every answer is read before this returns. A chunk whose answer
    says Redis lost the script is pushed again by ``push(topic, items, tally=tally)``
    (:func:`.queue.push`, which loads it); the first other refusal is raised once all are
    read, as a pipeline raises it. Where the connection breaks, the chunks not answered
    are restored (``reconcile.restore``) on a new one."""
    settle()
    held = _held(client)
    prefix = held.prefix(topic)
    packed = [_pack(prefix, tally, items) for tally, items in chunks]
    answers: list[Any] = []
    try:
        held.conn.send_packed_command(packed)
        for _ in packed:
            try:
                answers.append(held.conn.read_response())
            except redis.ResponseError as exc:  # NOSCRIPT among them
                answers.append(exc)
    except (redis.ConnectionError, redis.TimeoutError):
        held.conn.disconnect()
        # The chunks not answered may have run or not (a worker may have taken a job since):
        # their jobs go back only where Redis holds them nowhere, as send() does for one.
        from .reconcile import restore

        lost = chunks[len(answers):]
        back = restore(topic, [(job_id, priority, entity_id, None)
                               for _, items in lost for job_id, priority, entity_id in items])
        if back and any(tally for tally, _ in lost):  # those pushes did not run: nor did their tally
            client.hincrby(topic_keys(topic).metrics, "enqueued", len(back))
    refusal = None
    for (tally, items), answer in zip(chunks[: len(answers)], answers, strict=True):
        if isinstance(answer, redis.exceptions.NoScriptError):
            push(topic, items, tally=tally)
        elif isinstance(answer, redis.ResponseError) and refusal is None:
            refusal = answer
    if refusal is not None:
        raise refusal


def call(client: redis.Redis, *commands: tuple[Any, ...]) -> list[Any]:
    """The answers of ``commands``, sent in one write on this thread's connection and read
    in order: a pipeline without redis-py's bookkeeping around each answer, for a call
    whose answer is on a job's way to its start (the idle worker's wait and pop: see
    :func:`.queue.wait_and_pop`). Once every answer is read, the first error answer is
    raised. A connection that fails (or a read interrupted) is closed, and what it
    raised is raised."""
    settle()
    conn = _held(client).conn
    answers: list[Any] = []
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        for _ in commands:
            try:
                answers.append(conn.read_response())
            except redis.ResponseError as exc:
                answers.append(exc)
    except BaseException:
        conn.disconnect()  # an answer may be left unread on it
        raise
    for answer in answers:
        if isinstance(answer, redis.ResponseError):
            raise answer
    return answers


def settle() -> None:
    """Read this thread's outstanding push answer, if any (see the module's docstring)."""
    connection.waiting.read = None
    held: _Held | None = getattr(_local, "held", None)
    if held is None or held.sent is None:
        return
    sent, held.sent = held.sent, None
    if held.pid != os.getpid():
        return
    topic, job_id, priority, entity_id, push = sent
    failure, held.failure = held.failure, None
    reason: redis.RedisError
    try:
        if failure is not None:  # the answer was read while an INSERT ran (see answer_reader)
            raise failure
        held.conn.read_response()
        return
    except redis.exceptions.NoScriptError as exc:  # not run at all
        reason, unknown = exc, False
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        held.conn.disconnect()
        reason, unknown = exc, True
    except redis.RedisError as exc:
        refused(job_id, topic, exc)
        return
    try:
        if unknown:
            # Run or not, no one can tell: the answer may be what was lost, and a worker may
            # have taken the job since. So it goes back only where Redis holds it nowhere (as
            # the reconcile puts jobs back); a lease or a queued id is left alone.
            from .reconcile import restore

            restore(topic, [(job_id, priority, entity_id, None)])
        else:  # pushed again, the script loaded, waiting this time
            push()
    except redis.RedisError as exc:
        logger.debug("Push of job %s failed (%s), and again (%s).", job_id, reason, exc)
        refused(job_id, topic, exc)


def settle_if_answered() -> None:
    """:func:`settle`, if the outstanding answer has already come (nothing waits for one
    that has not). ``enqueue()`` calls this once its ``INSERT`` is done, the push having
    gone out before that statement's commit: the answer is read then, not before the
    thread's next ``INSERT``, which it would delay."""
    held: _Held | None = getattr(_local, "held", None)
    if held is None or held.sent is None or held.pid != os.getpid():
        return
    if held.failure is not None:
        settle()
        return
    try:
        answered = held.conn.can_read(timeout=0)
    except (redis.ConnectionError, redis.TimeoutError):
        answered = True  # broken: settle() finds it so, and acts
    if answered:
        settle()


def answer_reader() -> tuple[int, Callable[[], None]] | None:
    """The socket this thread's outstanding push answer comes on, and what reads it once it
    is readable; ``None`` if no answer is outstanding. For a wait that can read it
    meanwhile (an enqueue's ``INSERT``: see ``transitions.spinwait.spinning``), where nothing
    may log or push: the reader only reads, and keeps what reading raised for
    :func:`settle` (or :func:`settle_if_answered`) to act on afterwards."""
    held: _Held | None = getattr(_local, "held", None)
    if held is None or held.sent is None or held.failure is not None or held.pid != os.getpid():
        return None
    sock = getattr(held.conn, "_sock", None)
    if sock is None:
        return None

    def read() -> None:
        if held.sent is None or held.conn is None:
            return
        try:
            held.conn.read_response()
        except redis.RedisError as exc:
            held.failure = exc
            return
        except Exception as exc:  # noqa: BLE001 - never raised into the statement's wait
            held.conn.disconnect()  # what was read of the answer is unknown: as a broken connection
            held.failure = redis.ConnectionError(f"reading the push's answer failed: {exc!r}")
            return
        held.sent = None
        connection.waiting.read = None

    return sock.fileno(), read


def refused(job_id: str, topic: str, exc: Exception) -> None:
    """Log that Redis did not take the push of a committed job (the database keeps it)."""
    logger.warning("Redis did not take the push of committed job %s (topic %r: %s): it is kept in the database, "
                   "and a worker pushes it within about %s s.", job_id, topic, exc, settings.RECONCILE_SECONDS,
                   extra=job_id_extra(job_id, topic))


def release(**_: Any) -> None:
    """Read this thread's outstanding answer and give its connection back to the pool
    (a ``request_finished`` receiver: a request's pushes end with it)."""
    settle()
    held: _Held | None = getattr(_local, "held", None)
    if held is not None:
        _local.held = None
        held.give_back()


atexit.register(release)
