"""``jobworker --processes N``: N worker processes, each restarted if it dies."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

from .. import engine

logger = logging.getLogger("jobqueue.worker")

#: Shortest time between two restarts of one worker slot (seconds), so a crash loop doesn't spin.
RESTART_BACKOFF_SECONDS = 1.0


class Supervisor:
    """Fork ``processes`` children that each call ``make_worker(index).run()``."""

    def __init__(self, processes: int, make_worker: Callable[[int], Any]):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.processes = processes
        self.make_worker = make_worker
        self.children: dict[int, int] = {}  # pid -> index
        self.stopping = 0
        self.restarts = 0

    def _spawn(self, index: int) -> None:
        for conn in connections.all(initialized_only=True):
            conn.close()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                engine.reset_clients()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self.make_worker(index).run()
            except BaseException:  # noqa: BLE001 - report and exit the child
                logger.exception("Worker process %s crashed", index)
            finally:
                os._exit(code or 0)
        self.children[pid] = index
        logger.info("Started worker process %s (pid %s)", index, pid)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping += 1
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for index in range(self.processes):
            self._spawn(index)
        last_start: dict[int, float] = {}
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                logger.info("Worker process %s (pid %s) exited with %s", index, pid, code)
                continue
            logger.warning("Worker process %s (pid %s) died with %s; restarting it.", index, pid, code)
            wait = RESTART_BACKOFF_SECONDS - (time.monotonic() - last_start.get(index, 0.0))
            if wait > 0:
                time.sleep(wait)
            last_start[index] = time.monotonic()
            self.restarts += 1
            self._spawn(index)
        return 0
