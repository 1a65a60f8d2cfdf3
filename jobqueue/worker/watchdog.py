"""Giving up on an inline handler that does not stop when told to.

Python cannot stop a function from outside it: an inline handler past its timeout gets
a ``JobTimeout`` (through ``SIGALRM``), one running when the worker gets its second stop
signal gets ``WorkerInterrupted``, and a handler can catch either and go on. The
heartbeat thread polls the :class:`Watchdog`, which gives such a handler
:data:`ABANDON_AFTER_SECONDS` more, then abandons it: it records the attempt (timed out,
or aborted with the job queued again) from the heartbeat's thread and releases the
worker's slots. A worker that owns its process (``jobworker``: it installed its signal
handlers) then exits with code 1, which stops the handler (``--processes`` starts a new
worker process); an embedded one stops once the handler returns.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import connections

from .. import engine
from .lifecycle import Outcome, finish
from .runner import INTERRUPTED_CLASS, TIMEOUT_CLASS
from .slots import release_slots

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("jobqueue.worker")

#: Seconds an inline handler may go on past its timeout, or after the worker's second stop
#: signal, before the worker abandons it.
ABANDON_AFTER_SECONDS = 5.0


class Watchdog:
    """The inline handler running now, and when to abandon it."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.lock = threading.Lock()
        self.job: Any = None
        self.due: float | None = None  # monotonic time at which the handler is abandoned
        self.stop_requested = False
        self.abandoned = False

    @property
    def in_handler(self) -> bool:
        return self.job is not None

    def enter(self, job: Any, timeout: float | None) -> None:
        """An inline handler starts running ``job``."""
        with self.lock:
            self.job, self.stop_requested = job, False
            self.due = time.monotonic() + timeout + ABANDON_AFTER_SECONDS if timeout else None

    def leave(self) -> None:
        """The handler returned (if it was abandoned, its attempt is recorded already)."""
        with self.lock:
            self.job = self.due = None

    def request_stop(self) -> None:
        """The second stop signal. Called from the signal handler: no lock (the main
        thread, which the handler interrupted, may hold it)."""
        due = time.monotonic() + ABANDON_AFTER_SECONDS
        if self.job is not None and (self.due is None or due < self.due):
            self.stop_requested, self.due = True, due

    def check(self) -> None:
        """Abandon the handler if it is past due (the heartbeat calls this)."""
        with self.lock:
            job = self.job
            if job is None or self.abandoned or self.due is None or time.monotonic() < self.due:
                return
            self.abandoned = True
        self._abandon(job)

    def _abandon(self, job: Any) -> None:
        worker = self.worker
        owns_process = worker.signals_installed
        if self.stop_requested:
            ignored = "the stop request"
            outcome = Outcome(ok=False, error="aborted: the handler ignored the stop request",
                              error_class=INTERRUPTED_CLASS, interrupted=True)
        else:
            ignored = "its timeout"
            outcome = Outcome(ok=False, timed_out=True, error_class=TIMEOUT_CLASS, error=(
                f"Timed out after {job.timeout}s: the handler ran on and was abandoned "
                f"{ABANDON_AFTER_SECONDS:.0f}s later"))
        logger.error("The handler of job %s ignored %s for %.0fs; abandoning it%s.", job.pk, ignored,
                     ABANDON_AFTER_SECONDS, " and exiting" if owns_process else "")
        try:
            execution = getattr(job, "execution", None)
            if execution is not None:
                finish(job, execution, outcome)
        except Exception:
            logger.exception("Could not record the abandoned attempt of job %s; its lease will recover it.", job.pk)
        finally:
            worker.stopping = True
            worker.heartbeat.stop()
            release_slots(worker.slots)
            engine.safe_call(engine.forget, worker.worker_id)
            connections.close_all()  # this thread's
            if owns_process:
                logging.shutdown()
                os._exit(1)
