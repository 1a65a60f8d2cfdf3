"""The processes behind process isolation: the zygote, and the children it forks.

The zygote is forked once by the worker (see ``forking.py``); for every byte the
worker sends on their socket it forks a child and hands back the child's pid and pipes
(``SCM_RIGHTS``). It reaps its children as they end and writes each one's exit code
on that child's exit pipe. A child reads its job as JSON from its job pipe, runs the
topic's registered handler with stdout and stderr on its output pipes, and writes the
result as JSON on its result pipe.

Neither holds a database connection: the worker closes its own before it forks the
zygote, and as a second guard a forked process sets aside any inherited connection
without closing it (closing would end the parent's session) and leaves with
``os._exit``, so no socket is ever written by two processes. A handler that uses the
ORM opens its own.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Any

from django.db import connections

from .. import engine, registry, tracing
from ..chaining import to_wire
from ..models import Job
from ..progress import flush_progress
from ..storable import encode_json, exception_class_path
from .runner import _outcome_from_exception

#: The inherited database connections of a child, kept referenced until ``os._exit``.
_SET_ASIDE: list[Any] = []
#: The key of a child's job message that holds the worker's trace context (not a field).
TRACE_KEY = "_trace_context"


def job_from_wire(model: Any, data: dict[str, Any]) -> Any:
    values = {}
    for field in model._meta.concrete_fields:
        value = data.get(field.attname)
        if value is not None and field.get_internal_type() != "JSONField":
            value = field.to_python(value)
        values[field.attname] = value
    job = model(**values)
    job._state.adding = False
    return job


def _set_aside_connections() -> None:
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _SET_ASIDE.append(conn.connection)
        conn.connection = None
        conn.in_atomic_block = False
        conn.savepoint_ids = []
        conn.needs_rollback = False
        conn.run_on_commit = []
        conn.closed_in_transaction = False


def _child_main(job_r: int, out_w: int, err_w: int, res_w: int) -> None:
    """Wait for a job on ``job_r``, run it, write the result to ``res_w``, exit."""
    exit_code = 1
    try:
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        # As Python's own stderr: a traceback of text UTF-8 cannot encode is still printed.
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False, errors="backslashreplace")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _set_aside_connections()
        engine.reset_clients()
        chunks = []
        while True:
            chunk = os.read(job_r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:  # the worker stopped before giving us a job
            os._exit(0)
        message = json.loads(b"".join(chunks))
        carrier = message.pop(TRACE_KEY, None)
        job = job_from_wire(Job, message)
        spec = registry.get(job.topic_id)
        try:
            if spec is None:
                raise LookupError(f"No handler is registered for topic {job.topic_id!r}.")
            with tracing.attached(carrier):
                result = spec.func(job)
            payload = {"ok": True, "result": to_wire(result), "exit_code": 0}
            exit_code = 0
        except BaseException as exc:  # noqa: BLE001 - sys.exit(n) fails the attempt with its exit code
            o = _outcome_from_exception(exc)
            exit_code = _exit_status(exc.code) if isinstance(exc, SystemExit) else 1
            payload = {"ok": False, "error": o.error, "error_class": o.error_class, "traceback": o.traceback,
                       "retry_delay": o.retry_delay, "exit_code": exit_code}
            traceback.print_exc()
        try:
            flush_progress(job)  # the last report, if the throttle held it back
        except Exception:  # noqa: BLE001 - a progress write must not cost the result
            traceback.print_exc()
        try:
            data = encode_json(payload).encode()
        except (TypeError, ValueError) as exc:
            data = json.dumps({"ok": False, "error": f"Handler returned a result that is not JSON: {exc}",
                               "error_class": exception_class_path(exc), "exit_code": 1}).encode()
            exit_code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(res_w, view) :]
        # Closing our ends now lets the worker go on while this process is torn down.
        os.close(res_w)
        os.close(1)
        os.close(2)
    except BaseException:  # noqa: BLE001 - the child must always end here
        traceback.print_exc()
    finally:
        for conn in connections.all(initialized_only=True):
            if conn.connection is not None:  # the handler's own connection
                conn.close()
        try:
            tracing.flush()  # the handler's spans: os._exit skips every exit handler
        except Exception:  # noqa: BLE001 - an exporter's trouble must not change the exit code
            pass
        os._exit(exit_code)


def _wait_for_request(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1))
    except ConnectionResetError:  # the worker closed the socket with a reply unread: it stopped
        return False


def zygote_main(sock: socket.socket) -> None:
    """Fork a child for every byte received on ``sock``; send back its pid and pipes.
    Reap children as they exit, writing each one's exit code to its exit pipe."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)  # a SIGCHLD makes wake_r readable, waking the select below
        signal.signal(signal.SIGCHLD, _on_sigchld)
        _set_aside_connections()
        engine.reset_clients()
        tracing.preload()  # once here, not in every child
        exit_pipes: dict[int, int] = {}  # child pid -> write end of its exit pipe
        waiting_on: list[Any] = [sock, wake_r]
        while True:
            ready, _, _ = select.select(waiting_on, [], [])
            if wake_r in ready:
                _drain(wake_r)
                _report_exits(exit_pipes)
            if sock not in ready:
                continue
            if not _wait_for_request(sock):
                break
            job_r, job_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            res_r, res_w = os.pipe()
            exit_r, exit_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                sock.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                close_fds([job_w, out_r, err_r, res_r, exit_r, exit_w, wake_r, wake_w, *exit_pipes.values()])
                _child_main(job_r, out_w, err_w, res_w)
            exit_pipes[pid] = exit_w
            socket.send_fds(sock, [str(pid).encode()], [job_w, out_r, err_r, res_r, exit_r])
            close_fds([job_r, job_w, out_r, out_w, err_r, err_w, res_r, res_w, exit_r])
    except BaseException:  # noqa: BLE001 - the zygote must always end here
        traceback.print_exc()
    finally:
        os._exit(0)


def _on_sigchld(signum: int, frame: Any) -> None:
    """Nothing: the signal's byte on the wakeup fd is what wakes the zygote."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _report_exits(exit_pipes: dict[int, int]) -> None:
    """Reap every child that ended; write its exit code (negative: the signal that killed
    it) to its exit pipe, if the worker still listens."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = exit_pipes.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            except OSError:
                pass  # the worker had the child's result and closed its end
            os.close(fd)


def _exit_status(code: Any) -> int:
    """The exit status ``sys.exit(code)`` gives a process."""
    if code is None:
        return 0
    return code & 0xFF if isinstance(code, int) else 1


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
