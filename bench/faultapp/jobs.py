"""Handlers of the fault-injection scenarios.

Each handler appends a start line and an end line to a per-process file under
``FAULTS_LOG_DIR``: ``S|E <job id> <attempt> <pid> <epoch seconds>``. The runner
reads them as the ground truth of what really ran, next to the ``Execution`` rows
the worker records. ``O_APPEND`` writes of one short line are atomic, and a line
written before a SIGKILL is kept (it is in the kernel's page cache).
"""

from __future__ import annotations

import os
import signal
import time

from django.conf import settings

from jobqueue import handler

_fd: dict[int, int] = {}


def record(kind: str, job) -> None:
    folder = getattr(settings, "FAULTS_LOG_DIR", "")
    if not folder:
        return
    pid = os.getpid()
    fd = _fd.get(pid)
    if fd is None:
        fd = os.open(os.path.join(folder, f"runs-{pid}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fd[pid] = fd
    os.write(fd, f"{kind} {job.pk} {job.attempt} {pid} {time.time():.6f}\n".encode())


def _work(job) -> dict:
    record("S", job)
    time.sleep(job.payload.get("ms", 2) / 1000)
    record("E", job)
    return {"n": job.payload.get("n")}


@handler("work", concurrency=4, max_attempts=10, timeout=60)
def work(job):
    """Sleep a few milliseconds; four may run at once."""
    return _work(job)


@handler("serial", concurrency=1, max_attempts=10, timeout=60)
def serial(job):
    """Sleep a few milliseconds; one at a time across all workers."""
    return _work(job)


@handler("trio", concurrency=3, max_attempts=10, timeout=60)
def trio(job):
    """Sleep a few milliseconds; three may run at once."""
    return _work(job)


def _slow(job):
    record("S", job)
    if job.attempt == 1:
        time.sleep(job.payload.get("seconds", 5))  # past the topic's timeout
    record("E", job)
    return {"attempt": job.attempt}


@handler("slow", timeout=1, max_attempts=3, retry_backoff=0.1)
def slow(job):
    """Overruns its 1 s timeout on the first attempt (inline: interrupted by SIGALRM)."""
    return _slow(job)


@handler("slow-proc", timeout=1, max_attempts=3, retry_backoff=0.1, isolation="process")
def slow_proc(job):
    """Overruns its 1 s timeout on the first attempt (process: the child is killed)."""
    return _slow(job)


def _stubborn_while_marked(job) -> None:
    """Block while the marker file named in the payload exists, swallowing every interrupt."""
    marker = job.payload["marker"]
    while os.path.exists(marker):
        try:
            time.sleep(0.05)
        except BaseException:  # noqa: BLE001 - the point: this handler refuses to stop
            pass


@handler("stubborn", timeout=300, max_attempts=3)
def stubborn(job):
    """Runs in the worker and swallows the worker's interrupt while its marker exists."""
    record("S", job)
    _stubborn_while_marked(job)
    record("E", job)
    return "done"


@handler("stubborn-proc", timeout=300, max_attempts=3, isolation="process")
def stubborn_proc(job):
    """Runs in a forked child that ignores SIGTERM while its marker exists."""
    record("S", job)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stubborn_while_marked(job)
    record("E", job)
    return "done"


@handler("limited", concurrency=4, max_attempts=10, timeout=60, rate="40/s:4", key_concurrency=1)
def limited(job):
    """Sleep a few milliseconds; at most 40 starts a second (4 at once), one job per key at a time."""
    return _work(job)
