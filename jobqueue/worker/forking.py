"""Process isolation: every job runs in a fresh forked child.

Children are forked by a small "zygote" process that the worker forks once at
start: forking the busy worker for every job would make the worker pay
copy-on-write faults on every page it touches while the child lives. The zygote
keeps one child forked ahead, and hands the worker that child's pipes over a
Unix socket (``SCM_RIGHTS``). A child receives its job as JSON on a pipe (never
pickle), runs the topic's registered handler, and sends the result back as JSON;
its stdout and stderr are captured up to ``MAX_OUTPUT_BYTES`` each. The zygote reaps
its children and reports each one's exit code on a pipe of its own, which the worker
reads when a child ended without a result (``os._exit()``, a signal).

The worker closes its database connections before it forks the zygote, so the
zygote and its children start with none. What runs in those processes is in
``zygote.py``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections

from ..chaining import from_wire
from ..conf import settings
from .lifecycle import Outcome
from .runner import INTERRUPTED_CLASS, TIMEOUT_CLASS, _Capture
from .zygote import close_fds, zygote_main

#: Seconds the worker waits for the exit code of a child that ended without a result.
EXIT_CODE_WAIT_SECONDS = 2.0


@dataclass
class Child:
    pid: int
    job_w: int
    out_r: int
    err_r: int
    res_r: int
    exit_r: int  # the zygote writes the child's exit code here once it has reaped it

    def parent_fds(self) -> list[int]:
        return [self.job_w, self.out_r, self.err_r, self.res_r, self.exit_r]


def job_to_wire(job: Any) -> dict[str, Any]:
    """The job's field values as JSON-ready data."""
    out = {}
    for field in type(job)._meta.concrete_fields:
        value = field.value_from_object(job)
        if not field.get_internal_type() == "JSONField" and value is not None:
            value = field.value_to_string(job)
        out[field.attname] = value
    return out


def _read_exit_code(fd: int) -> int | None:
    """The exit code the zygote reports for a child, if it comes within a short wait."""
    ready, _, _ = select.select([fd], [], [], EXIT_CODE_WAIT_SECONDS)
    try:
        return int(os.read(fd, 32)) if ready else None
    except ValueError:  # the zygote died first: nothing was written
        return None


def _died(exit_code: int | None, stdout: str, stderr: str) -> str:
    """Why a child ended without a result, with the last line it printed."""
    if exit_code is None:
        what = "The child process died without sending a result"
    elif exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = "unknown"
        what = f"The child process was killed by signal {-exit_code} ({name}) before sending a result"
    else:
        what = f"The child process exited with code {exit_code} without sending a result"
    last = (stderr.strip() or stdout.strip()).splitlines()[-1:]
    return f"{what}; its last output: {last[0][:200]}" if last else what


class ForkRunner:
    """Runs jobs in forked children, one per job, with one child forked ahead."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.zygote_pid: int | None = None
        self.requested = 0  # children asked of the zygote and not received yet

    def start(self) -> None:
        """Fork the zygote now (best before the worker starts threads)."""
        if self.sock is None:
            self._start_zygote()

    def _start_zygote(self) -> None:
        for conn in connections.all(initialized_only=True):
            conn.close()  # the worker reconnects once; the zygote never has a connection
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            parent_sock.close()
            zygote_main(child_sock)
        child_sock.close()
        self.sock, self.zygote_pid, self.requested = parent_sock, pid, 0

    def _request(self) -> None:
        if self.sock is None:
            self._start_zygote()
        assert self.sock is not None
        self.sock.sendall(b"f")
        self.requested += 1

    def _receive(self) -> Child:
        assert self.sock is not None
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 32, 5)
        self.requested -= 1
        if not data or len(fds) != 5:
            close_fds(list(fds))
            raise ConnectionError("the zygote process is gone")
        return Child(int(data.decode()), *fds)

    def _next_child(self) -> Child:
        for attempt in range(2):
            try:
                if not self.requested:
                    self._request()
                return self._receive()
            except (OSError, ConnectionError, ValueError):
                if attempt:
                    raise
                self.close()  # a dead zygote: start a new one
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the zygote; a child forked ahead exits when its job pipe closes."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        if self.zygote_pid is not None:
            _reap(self.zygote_pid, wait=2.0)
            self.zygote_pid = None
        self.requested = 0

    def run(self, job: Any, timeout: float | None, should_stop: Callable[[], Any]) -> Outcome:
        data = json.dumps(job_to_wire(job)).encode()
        for attempt in range(2):
            child = self._next_child()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(child.job_w, view) :]
                break
            except BrokenPipeError:  # that child died before its job: take another
                close_fds(child.parent_fds())
                if attempt:
                    raise
        os.close(child.job_w)
        try:
            self._request()  # the zygote forks the next child while this one works
            return self._collect(child, timeout, should_stop)
        finally:
            close_fds([child.exit_r])

    def _collect(self, child: Child, timeout: float | None, should_stop: Callable[[], Any]) -> Outcome:
        limit = settings.MAX_OUTPUT_BYTES
        captures = {child.out_r: _Capture(limit), child.err_r: _Capture(limit)}
        result_chunks: list[bytes] = []
        open_fds = {child.out_r, child.err_r, child.res_r}
        deadline = time.monotonic() + timeout if timeout else None
        timed_out = aborted = interrupted = False
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
                    elif fd == child.res_r:
                        result_chunks.append(chunk)
                    else:
                        captures[fd].feed(chunk)
                if deadline is not None and time.monotonic() >= deadline and not timed_out:
                    timed_out = True
                    _kill(child.pid)
                elif not (aborted or interrupted or timed_out):
                    reason = should_stop()
                    if reason:
                        interrupted, aborted = reason == "interrupt", reason != "interrupt"
                        _kill(child.pid)
        finally:
            close_fds([child.out_r, child.err_r, child.res_r])
        # The child is the zygote's: its exit code comes with its result, or is the kill's.
        exit_code = -signal.SIGKILL if (timed_out or aborted or interrupted) else None
        common: dict[str, Any] = {
            "exit_code": exit_code,
            "stdout": captures[child.out_r].text(),
            "stderr": captures[child.err_r].text(),
        }
        if timed_out:
            return Outcome(ok=False, error=f"Timed out after {timeout}s; the child process was killed",
                           error_class=TIMEOUT_CLASS, timed_out=True, **common)
        if interrupted:
            return Outcome(ok=False, error="aborted: the worker was stopped", error_class=INTERRUPTED_CLASS,
                           interrupted=True, **common)
        if aborted:
            return Outcome(ok=False, error="cancelled while running; the child process was killed", aborted=True,
                           **common)
        try:
            payload = json.loads(b"".join(result_chunks) or b"null")
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            common["exit_code"] = _read_exit_code(child.exit_r)
            return Outcome(ok=False, error=_died(common["exit_code"], common["stdout"], common["stderr"]), **common)
        if common["exit_code"] is None:
            common["exit_code"] = payload.get("exit_code")
        if payload.get("ok"):
            return Outcome(ok=True, result=from_wire(payload.get("result")), **common)
        error_class = payload.get("error_class")
        return Outcome(ok=False, error=payload.get("error", "failed"), traceback=payload.get("traceback", ""),
                       error_class=error_class if isinstance(error_class, str) else "",
                       retry_delay=payload.get("retry_delay"), **common)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int, wait: float) -> int | None:
    """Wait up to ``wait`` seconds for ``pid`` to exit (then kill it); returns its status."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() >= deadline:
            _kill(pid)
            try:
                return os.waitpid(pid, 0)[1]
            except ChildProcessError:
                return None
        time.sleep(0.01)
