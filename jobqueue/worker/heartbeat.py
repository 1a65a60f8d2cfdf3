"""The heartbeat thread: renews the worker's topic slots, its job's lease and those of the
jobs it leased ahead (``readahead.py``), publishes
the worker in the live-worker registry, notices cancel requests for the running job,
and lets the watchdog abandon an inline handler that will not stop (``watchdog.py``).

It talks only to Redis; the database is the main thread's, but for the watchdog's
record of an abandoned attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import redis

from .. import engine
from ..conf import settings
from ..logging import job_extra

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("jobqueue.worker")

#: Seconds between two checks of the running job's cancel flag.
ABORT_POLL_SECONDS = 0.25


class Heartbeat(threading.Thread):
    def __init__(self, worker: Worker):
        super().__init__(name=f"jobqueue-heartbeat-{worker.worker_id}", daemon=True)
        self.worker = worker
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        last_beat = 0.0
        while not self.stopped.is_set():
            try:
                self.worker.watchdog.check()
                if self.stopped.is_set():  # the watchdog abandoned the handler
                    break
                now = time.monotonic()
                if now - last_beat >= settings.HEARTBEAT_SECONDS:
                    self.beat()
                    last_beat = now
                self.check_abort()
            except redis.RedisError as exc:
                logger.warning("Heartbeat could not reach Redis: %s", exc)
            except Exception:  # a heartbeat must never die silently
                logger.exception("Heartbeat error")
            self.stopped.wait(ABORT_POLL_SECONDS)

    def beat(self) -> None:
        w = self.worker
        for topic, lock in list(w.slots.items()):
            if not lock.renew():
                logger.warning("Lost the slot of topic %s (TTL expired); will try to take it again.", topic)
                w.slots.pop(topic, None)
        current = w.current
        if current is not None:
            lost = engine.extend_leases(current.topic_id, [str(current.pk)])
            # Unless the worker moved on meanwhile (this thread may wait for the GIL between
            # reading ``current`` and the call while several jobs run): then the lease went
            # with the job's own acknowledgement, not to a reclaim.
            if lost and w.current is current:
                logger.warning("The lease of job %s was reclaimed; its result will be discarded.", current.pk,
                               extra=job_extra(current))
        for topic, ids in w.readahead.held_leases().items():
            lost = engine.extend_leases(topic, ids)
            if lost:
                w.readahead.lost(lost)
        engine.beat(w.worker_id, w.info())

    def check_abort(self) -> None:
        """The cancel requests of the running job, and of the jobs claimed to run next
        (those never start: see :meth:`.ReadAhead.cancelled`)."""
        current = self.worker.current
        if current is not None and not self.worker.abort_current.is_set():
            if engine.abort_requested(current.topic_id, str(current.pk)):
                self.worker.abort_current.set()
        for topic, ids in self.worker.readahead.claimed_ids().items():
            self.worker.readahead.cancelled(engine.aborts_requested(topic, ids))
