"""Stopping a worker by signal: the first SIGTERM or SIGINT lets the current job finish,
then the worker releases its slots and exits; the second aborts the job (its Execution
marked aborted, the job queued again).

An inline handler is interrupted with :class:`~.runner.WorkerInterrupted` (and
abandoned by the watchdog if it swallows it); a forked child is told through the
worker's ``interrupting`` flag.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from .runner import WorkerInterrupted

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("jobqueue.worker")


def install_stop_signals(worker: Worker) -> bool:
    """Make SIGTERM and SIGINT stop ``worker``; returns False (and does nothing) outside
    the main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return False
    handler = StopSignalHandler(worker)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return True


class StopSignalHandler:
    """The handler of SIGTERM and SIGINT for one worker."""

    def __init__(self, worker: Worker):
        self.worker = worker

    def __call__(self, signum: int, frame: Any) -> None:
        worker = self.worker
        name = signal.Signals(signum).name
        if not worker.stopping:
            worker.stopping = True
            logger.warning("%s received: finishing the current job, then stopping (again to abort it).", name)
            return
        worker.interrupting = True
        logger.warning("%s received again: aborting the current job.", name)
        if worker.watchdog.in_handler:
            # A handler may swallow the interrupt (``except BaseException``): the watchdog
            # abandons it if it does not stop soon.
            worker.watchdog.request_stop()
            raise WorkerInterrupted()
