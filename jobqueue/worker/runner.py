"""Running one handler call: inline (in the worker) or in a forked child process.

Both have a timeout: inline through ``SIGALRM`` (main thread), a child is killed.
A child's stdout and stderr are captured up to ``MAX_OUTPUT_BYTES`` each.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from django.db import connections

from .. import Retry
from ..chaining import from_wire, to_wire
from ..conf import settings
from .lifecycle import Outcome


class JobTimeout(Exception):  # noqa: N818 - "timeout" reads better than "TimeoutError" here
    """Raised inside an inline handler when its timeout expires."""


class WorkerInterrupted(BaseException):
    """Raised inside an inline handler when the worker must stop now (second signal).

    A ``BaseException`` so a handler's ``except Exception`` cannot swallow it.
    """


def _outcome_from_exception(exc: BaseException) -> Outcome:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, Retry):
        return Outcome(ok=False, error=f"Retry requested: {exc}", traceback=tb, retry_delay=exc.delay)
    if isinstance(exc, JobTimeout):
        return Outcome(ok=False, error=str(exc), traceback=tb, timed_out=True)
    if isinstance(exc, WorkerInterrupted):
        return Outcome(ok=False, error="aborted: the worker was stopped", traceback=tb, interrupted=True)
    return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=tb)


def run_inline(func: Callable[[Any], Any], job: Any, timeout: float | None) -> Outcome:
    """Call the handler in this process; a timeout raises :class:`JobTimeout` inside it."""
    use_alarm = bool(timeout) and threading.current_thread() is threading.main_thread()

    def on_alarm(signum: int, frame: Any) -> None:
        raise JobTimeout(f"Timed out after {timeout}s")

    previous = signal.signal(signal.SIGALRM, on_alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, float(timeout))  # type: ignore[arg-type]
    try:
        result = func(job)
        return Outcome(ok=True, result=result)
    except (Exception, WorkerInterrupted) as exc:
        return _outcome_from_exception(exc)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


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


def run_in_child(
    func: Callable[[Any], Any],
    job: Any,
    timeout: float | None,
    should_stop: Callable[[], bool],
) -> Outcome:
    """Fork a child that runs the handler; kill it on timeout or when ``should_stop()``.

    Database connections are closed before the fork so parent and child never share
    a socket. Returns the child's result, output and exit code.
    """
    for conn in connections.all(initialized_only=True):
        conn.close()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        exit_code = 1
        try:
            os.close(out_r)
            os.close(err_r)
            os.close(res_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
            sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            from .. import engine

            engine.reset_clients()
            try:
                payload = {"ok": True, "result": to_wire(func(job))}
                exit_code = 0
            except Exception as exc:
                o = _outcome_from_exception(exc)
                payload = {"ok": False, "error": o.error, "traceback": o.traceback, "retry_delay": o.retry_delay}
                traceback.print_exc()
            try:
                data = json.dumps(payload, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                data = json.dumps({"ok": False, "error": f"Handler returned a result that is not JSON: {exc}"}).encode()
                exit_code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            with os.fdopen(res_w, "wb") as res:
                res.write(data)
        except BaseException:  # noqa: BLE001 - the child must always exit here
            traceback.print_exc()
        finally:
            for conn in connections.all(initialized_only=True):
                conn.close()
            os._exit(exit_code)

    # parent
    os.close(out_w)
    os.close(err_w)
    os.close(res_w)
    limit = settings.MAX_OUTPUT_BYTES
    captures = {out_r: _Capture(limit), err_r: _Capture(limit)}
    result_chunks: list[bytes] = []
    open_fds = {out_r, err_r, res_r}
    deadline = time.monotonic() + timeout if timeout else None
    timed_out = aborted = interrupted = False
    status = None
    try:
        while open_fds:
            wait = 0.2
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            ready, _, _ = select.select(list(open_fds), [], [], wait)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == res_r:
                    result_chunks.append(chunk)
                else:
                    captures[fd].feed(chunk)
            if deadline is not None and time.monotonic() >= deadline and not timed_out:
                timed_out = True
                _kill(pid)
            elif should_stop() and not (aborted or interrupted):
                reason = should_stop()
                if reason == "interrupt":
                    interrupted = True
                else:
                    aborted = True
                _kill(pid)
        _, status = os.waitpid(pid, 0)
    finally:
        for fd in (out_r, err_r, res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if status is None:
            _kill(pid)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 0
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    stdout, stderr = captures[out_r].text(), captures[err_r].text()
    common = {"exit_code": exit_code, "stdout": stdout, "stderr": stderr}
    if timed_out:
        return Outcome(ok=False, error=f"Timed out after {timeout}s; the child process was killed", timed_out=True,
                       **common)
    if interrupted:
        return Outcome(ok=False, error="aborted: the worker was stopped", interrupted=True, **common)
    if aborted:
        return Outcome(ok=False, error="cancelled while running; the child process was killed", aborted=True,
                       **common)
    try:
        payload = json.loads(b"".join(result_chunks) or b"null")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return Outcome(ok=False, error=f"The child process exited with code {exit_code} without a result", **common)
    if payload.get("ok"):
        return Outcome(ok=True, result=from_wire(payload.get("result")), **common)
    return Outcome(ok=False, error=payload.get("error", "failed"), traceback=payload.get("traceback", ""),
                   retry_delay=payload.get("retry_delay"), **common)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
