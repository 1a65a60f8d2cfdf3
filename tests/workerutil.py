"""Helpers for tests that run workers: in this process, or as ``jobworker`` subprocesses.

A subprocess worker must see the test database, not the one named in the settings:
:func:`child_env` points it at the database this test process is connected to
(the SQLite file or the PostgreSQL test database) and at the same Redis and prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = str(Path(__file__).resolve().parent.parent)

#: Short timings for subprocess workers, so crash recovery takes seconds, not minutes.
FAST = {"LEASE_SECONDS": "2", "HEARTBEAT_SECONDS": "0.5", "LOCK_TTL_SECONDS": "2"}


def run_worker(*topics: str, **kwargs: Any) -> Any:
    """Run a worker in this process, ``burst`` unless told otherwise, and return it."""
    from jobqueue.worker import Worker

    kwargs.setdefault("burst", True)
    worker = Worker(topics=list(topics) or None, install_signals=False, **kwargs)
    assert worker.run() == 0
    return worker


def redis_keys(client: Any, pattern: str = "*") -> list[bytes]:
    """``KEYS pattern`` on the test Redis: on a cluster, every master's keys."""
    from jobqueue.engine.connection import is_cluster

    if is_cluster(client):
        return list(client.keys(pattern, target_nodes=client.PRIMARIES))
    return list(client.keys(pattern))


def jobqueue_settings(**values: Any) -> Any:
    """``override_settings`` of some ``JOBQUEUE`` keys, the others kept."""
    from django.conf import settings
    from django.test.utils import override_settings

    return override_settings(JOBQUEUE={**settings.JOBQUEUE, **values})


def nested(levels: int) -> list[Any]:
    """``levels`` arrays nested in each other (``[[[]]]`` for 3), built without recursion."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, message: str = "condition",
              interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail clearly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of a worker subprocess: same Redis, prefix and (test) database."""
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env["JOBQUEUE_TEST_REDIS_URL"] = settings.REDIS_URL
    env["JOBQUEUE_TEST_PREFIX"] = settings.JOBQUEUE["PREFIX"]
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "postgresql":
        env["JOBQUEUE_TEST_DB"] = "postgres"
        env["JOBQUEUE_TEST_PG_NAME"] = name
    else:
        env["JOBQUEUE_TEST_DB"] = "sqlite"
        env["JOBQUEUE_TEST_SQLITE_NAME"] = name
    for key, value in overrides.items():
        env[f"JOBQUEUE_TEST_{key}"] = str(value)
    return env


def manage_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "django", *args, "--settings=tests.settings"]


class WorkerProcess:
    """A ``jobworker`` subprocess whose output goes to files under ``log_dir``."""

    def __init__(self, args: list[str], log_dir: Path, name: str, env: dict[str, str]):
        self.args = args
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(manage_command("jobworker", *args), cwd=REPO_ROOT, env=env,
                                         stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"worker {self.name} did not exit within {timeout}s:\n{self.output()}"
            raise AssertionError(message) from None

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.output():
                raise AssertionError(f"worker {self.name} exited ({self.proc.returncode}) before logging "
                                     f"{text!r}:\n{self.output()}")
            return text in self.output()

        wait_for(seen, timeout, f"{text!r} in the log of worker {self.name}")

    def kill(self) -> None:
        """SIGKILL the worker and every process it forked."""
        family = _descendants(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        out += kids
        todo += kids
    return out


class WorkerPool:
    """Starts worker subprocesses for a test and kills every one of them at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []

    def start(self, *args: str, name: str | None = None, fast: bool = True,
              **env_overrides: str) -> WorkerProcess:
        overrides = dict(FAST) if fast else {}
        overrides.update(env_overrides)
        name = name or f"worker{len(self.workers) + 1}"
        worker = WorkerProcess(list(args), self.log_dir, name, child_env(**overrides))
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
