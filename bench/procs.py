"""Worker subprocesses: started in their own process group, always killed at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The repository root: on the workers' ``PYTHONPATH`` so ``bench`` and ``jobqueue`` import.
ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A workload could not be measured (a worker failed, or jobs went missing)."""


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """One worker subprocess; its output goes to a temporary file shown if it fails."""

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.argv = argv
        self.log = tempfile.TemporaryFile()
        self.started = time.time()
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=worker_env(), stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, limit: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-limit:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name} did not exit within {timeout:.0f}s:\n{self.output()}") from None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (a warm shutdown for every system), then SIGKILL to the whole group."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # forked children (work horses, job processes) too
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()
        self.log.close()

    def rss_mb(self) -> float:
        return read_rss_mb(self.pid)


def read_rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set size in MB, from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no {field} for pid {pid}")


class Procs:
    """Every worker a workload starts; ``with Procs() as procs:`` stops them all on exit."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, argv)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        while self.procs:
            self.procs.pop().stop()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def jobqueue_worker(topic: str, burst: bool = True) -> list[str]:
    argv = python("-m", "django", "jobworker", "--topics", topic, "--log-level", "WARNING")
    return [*argv, "--burst"] if burst else argv


def celery_worker() -> list[str]:
    return python("-m", "celery", "-A", "bench.peers", "worker", "-P", "solo", "-c", "1", "-l", "WARNING")


def rq_worker(kind: str, burst: bool = True) -> list[str]:
    argv = python(str(ROOT / "bench" / "rqworker.py"), kind)
    return [*argv, "--burst"] if burst else argv


def wait_for(condition: Callable[[], Any], timeout: float, what: str, procs: list[Proc] = (),
             interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; fail early if a worker died."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for proc in procs:
            if not proc.alive():
                code = proc.popen.returncode
                raise BenchError(f"{proc.name} exited ({code}) before {what}:\n{proc.output()}")
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {p.name}:\n{p.output()}" for p in procs)
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}\n{details}")
        time.sleep(interval)
