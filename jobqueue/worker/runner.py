"""Running one handler call inline (in the worker), with a timeout through
``SIGALRM``; and the pieces the forked runner (``forking.py``) shares with it."""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .. import Retry
from ..storable import exception_class_path, exception_message, exception_text
from .lifecycle import Outcome

try:
    # The C functions that signal.signal() and signal.getsignal() wrap: the wrappers turn a
    # handler into an enum member, or raise and catch a ValueError trying (~3 µs a call,
    # a few calls a job, on every job's way to its handler).
    from _signal import getsignal as _getsignal
    from _signal import signal as _setsignal
except ImportError:  # not CPython
    _getsignal, _setsignal = signal.getsignal, signal.signal


class JobTimeout(Exception):  # noqa: N818 - "timeout" reads better than "TimeoutError" here
    """Raised inside an inline handler when its timeout expires."""


class WorkerInterrupted(BaseException):
    """Raised inside an inline handler when the worker must stop now (second signal).

    A ``BaseException`` so a handler's ``except Exception`` cannot swallow it.
    """


#: The classes recorded for attempts that the worker ended (inline they are raised in the
#: handler; a forked child is killed instead).
TIMEOUT_CLASS = exception_class_path(JobTimeout)
INTERRUPTED_CLASS = exception_class_path(WorkerInterrupted)


def _outcome_from_exception(exc: BaseException) -> Outcome:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error_class = exception_class_path(exc)
    if isinstance(exc, Retry):
        return Outcome(ok=False, error=f"Retry requested: {exception_message(exc)}", error_class=error_class,
                       traceback=tb, retry_delay=exc.delay, exception=exc)
    if isinstance(exc, JobTimeout):
        return Outcome(ok=False, error=str(exc), error_class=error_class, traceback=tb, timed_out=True, exception=exc)
    if isinstance(exc, WorkerInterrupted):
        return Outcome(ok=False, error="aborted: the worker was stopped", error_class=error_class, traceback=tb,
                       interrupted=True, exception=exc)
    return Outcome(ok=False, error=exception_text(exc), error_class=error_class, traceback=tb, exception=exc)


def _interrupt(signum: int, frame: Any) -> None:
    raise WorkerInterrupted()


def run_inline(func: Callable[[Any], Any], job: Any, timeout: float | None) -> Outcome:
    """Call the handler in this process; a timeout raises :class:`JobTimeout` inside it.

    Whatever the handler raises, ``SystemExit`` and ``KeyboardInterrupt`` included, fails
    the attempt. A handler that catches its ``JobTimeout`` and ends later has timed out all
    the same, whatever it returned. Where SIGINT is left to Python (a worker that does not
    install signal handlers), a real one stops the worker as its second signal would.
    """
    main = threading.current_thread() is threading.main_thread()
    use_alarm = bool(timeout) and main
    sigint = main and _getsignal(signal.SIGINT) is signal.default_int_handler
    deadline = time.monotonic() + float(timeout or 0)
    fired = False

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal fired
        fired = True
        raise JobTimeout(f"Timed out after {timeout}s")

    previous = _setsignal(signal.SIGALRM, on_alarm) if use_alarm else None
    if sigint:
        _setsignal(signal.SIGINT, _interrupt)
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, float(timeout))  # type: ignore[arg-type]
    try:
        try:
            result = func(job)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        outcome = Outcome(ok=True, result=result)
    except BaseException as exc:  # noqa: BLE001 - a handler's sys.exit() fails its attempt, not the worker
        outcome = _outcome_from_exception(exc)
    finally:
        if use_alarm:
            _setsignal(signal.SIGALRM, previous)
        if sigint:
            _setsignal(signal.SIGINT, signal.default_int_handler)
    if fired and not (outcome.timed_out or outcome.interrupted):
        late = time.monotonic() - deadline
        outcome = Outcome(ok=False, timed_out=True, error_class=TIMEOUT_CLASS, traceback=outcome.traceback,
                          error=f"Timed out after {timeout}s: the handler caught its JobTimeout and ended "
                                f"{late:.1f}s later")
    return outcome


class _Capture:
    """Keep the first and last ``limit`` bytes of a stream."""

    def __init__(self, limit: int):
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            excess = len(self.tail) - self.limit // 2
            if excess > 0:
                self.dropped += excess
                del self.tail[:excess]

    def text(self) -> str:
        marker = f"\n... [{self.dropped} bytes dropped] ...\n".encode() if self.dropped else b""
        return (bytes(self.head) + marker + bytes(self.tail)).decode("utf-8", "replace")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
