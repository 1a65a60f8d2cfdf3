"""Waiting for PostgreSQL's answer to a hot statement by polling its socket, for a moment,
instead of sleeping on it.

A process that sleeps in ``poll()`` until the answer comes is woken by the kernel when it
does, and on a virtual machine whose CPU went idle meanwhile that wake-up alone costs a
large part of a local round trip (measured: an enqueue's ``INSERT`` with its commit,
~546 µs a call asleep against ~428 µs polling, on two virtual cores). So an enqueue's
``INSERT`` (:func:`.fastsql.insert_job`), whose wait is mostly the commit's WAL flush while
the CPU is idle, polls its connection's socket without sleeping for at most
``JOBQUEUE["SPIN_WAIT_MICROSECONDS"]`` and only then hands the wait to psycopg. The price
is CPU: up to that long per enqueue, and only while the answer is due (an enqueue then
took as much CPU as Celery's ``delay()``: ~420 µs).

A connection whose answers keep coming later than that (a database across a network, a
slow disk's flush) stops polling after :data:`GIVE_UP` misses in a row and tries again
once every :data:`RETRY_AFTER` statements, so it costs nothing where it cannot pay.
``SPIN_WAIT_MICROSECONDS = 0`` turns it off; it is never used where ``poll()`` is missing.

The polling process gives its CPU away between two polls (``sched_yield``): the enqueue's
push is sent while the ``INSERT`` runs (see :func:`announcing`), and the worker it wakes,
and Redis, must not wait for a core behind it on a small machine.

:func:`announcing` also drives such a generator: it calls back once the statement is sent.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable, Generator
from typing import Any

logger = logging.getLogger("jobqueue.transitions")

#: Misses in a row (answers later than the budget) after which a connection stops polling.
GIVE_UP = 4
#: Statements a connection that gave up waits without polling before it tries once more.
RETRY_AFTER = 256

_POLL = getattr(select, "poll", None)
_IN = getattr(select, "POLLIN", 1)
_OUT = getattr(select, "POLLOUT", 4)
_YIELD: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


class SpinState:
    """A connection's record of how its polling went: ``misses`` in a row, and past
    :data:`GIVE_UP`, the statements waited without polling since."""

    __slots__ = ("misses",)

    def __init__(self) -> None:
        self.misses = 0

    def should_spin(self) -> bool:
        if self.misses < GIVE_UP:
            return True
        self.misses += 1
        if self.misses >= GIVE_UP + RETRY_AFTER:
            self.misses = GIVE_UP - 1  # the next statement polls once more
        return False


def available() -> bool:
    return _POLL is not None


def spinning(gen: Generator[Any, Any, Any], fileno: int, budget: float, state: SpinState,
             ready: tuple[Any, Any, Any, Any],
             meanwhile: Callable[[], tuple[int, Callable[[], Any]] | None] | None = None) -> Generator[Any, Any, Any]:
    """``gen`` (a psycopg generator: it yields what it waits for, is sent what is ready)
    driven by polling ``fileno`` without sleeping for up to ``budget`` seconds; what is
    left of it then goes on through the caller (psycopg's own wait). ``ready`` holds
    psycopg's readiness values for nothing, read, write, and both.

    ``meanwhile``, asked once the statement is on its way (until it answers), may give
    another socket and what reads it: that socket is polled with the statement's, and
    read as soon as it is readable (an enqueue reads its push's answer while its ``INSERT``
    commits, instead of after). What the reader raises is logged, never raised (as
    :func:`announcing`'s ``sent``): the statement's answer must still be read."""
    try:
        waiting = next(gen)  # the statement is sent; the first wait
    except StopIteration as done:  # nothing to wait for (as psycopg's own waits allow)
        return done.value
    poller = _POLL()  # type: ignore[misc]
    mask = (_IN if waiting & 1 else 0) | (_OUT if waiting & 2 else 0)
    poller.register(fileno, mask)
    other: tuple[int, Callable[[], Any]] | None = None
    ask = meanwhile is not None
    deadline = time.perf_counter() + budget
    while True:
        if ask and not waiting & 2:  # the statement is all sent: is there something to read meanwhile?
            ask = False
            other = meanwhile()  # type: ignore[misc]
            if other is not None:
                meanwhile = None
                poller.register(other[0], _IN)
        events = poller.poll(0)
        if other is not None and any(fd == other[0] for fd, _ in events):
            poller.unregister(other[0])
            _call(other[1], "Reading another socket while a statement ran failed; the statement goes on.")
            other = None
            events = [event for event in events if event[0] == fileno]
        if events:
            got = events[0][1]
            if got & ~(_IN | _OUT):  # an error or a hang-up: psycopg's wait finds out and says so
                break
            try:
                waiting = gen.send(ready[(1 if got & _IN else 0) | (2 if got & _OUT else 0)])
            except StopIteration as done:
                state.misses = 0
                return done.value
            ask = meanwhile is not None
            new = (_IN if waiting & 1 else 0) | (_OUT if waiting & 2 else 0)
            if new != mask:
                poller.modify(fileno, new)
                mask = new
        elif time.perf_counter() >= deadline:
            state.misses += 1
            break
        else:
            _YIELD()
    while True:  # the rest as psycopg waits, asleep
        sent = yield waiting
        try:
            waiting = gen.send(sent)
        except StopIteration as done:
            return done.value


def announcing(gen: Generator[Any, Any, Any], sent: Callable[[], Any]) -> Generator[Any, Any, Any]:
    """``gen`` (a generator of one statement's waits, as psycopg's are), calling ``sent()``
    once the statement is sent: at its first wait that is not for writing (a wait for
    reading comes only once all of it is flushed), or at its end. Whatever ``sent`` raises
    is logged, never raised: the statement's answer must still be read."""
    try:
        waiting = next(gen)
    except StopIteration as done:
        _call(sent)
        return done.value
    announced = False
    while True:
        if not announced and not waiting & 2:
            announced = True
            _call(sent)
        ready = yield waiting
        try:
            waiting = gen.send(ready)
        except StopIteration as done:
            if not announced:
                _call(sent)
            return done.value


def _call(call: Callable[[], Any],
          failed: str = "The call made as a statement was sent failed; the statement goes on.") -> None:
    try:
        call()
    except Exception:
        logger.exception(failed)
