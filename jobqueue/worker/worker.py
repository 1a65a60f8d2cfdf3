"""The worker: take topic slots, wait for work, run one job at a time, recover others'.

First SIGTERM/SIGINT: finish the current job, release slots, exit 0. Second: abort
the current job (its Execution marked aborted, the job requeued) and exit.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from typing import Any

import redis
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connections
from django.db.backends.signals import connection_created
from django.utils import timezone

from .. import engine, registry
from ..conf import settings
from ..engine import TopicLock, topic_keys
from ..models import Job, JobStatus, Topic
from ..storable import exception_class_path
from . import datadir, maintenance
from .forking import ForkRunner
from .heartbeat import Heartbeat
from .lifecycle import NextJob, Outcome, claim, finish, recover, success_tally, unclaim
from .runner import INTERRUPTED_CLASS, WorkerInterrupted, run_inline
from .watchdog import Watchdog

logger = logging.getLogger("jobqueue.worker")

#: Seconds between two attempts to take the slots of topics at their concurrency limit.
SLOT_RETRY_SECONDS = 2.0
#: Seconds between two maintenance passes (promote, reap, sentinel check).
MAINTENANCE_SECONDS = 1.0
#: Seconds between two sweeps for waiting jobs whose dependencies already finished.
SWEEP_SECONDS = 5.0
#: Seconds a worker waits idle before it lets Django close old database connections.
IDLE_CLOSE_SECONDS = 30.0
#: Longest wait for new work before looking around again (seconds).
IDLE_WAIT_SECONDS = 1.0
#: A burst worker still waits for scheduled jobs due within this many seconds.
BURST_SCHEDULE_HORIZON = 60.0


def _relax_commit_durability(sender: Any, connection: Any, **kwargs: Any) -> None:
    """On PostgreSQL, let the worker's commits return before their WAL is flushed.

    Only the worker's own bookkeeping (claims, outcomes, successors) is affected; a
    PostgreSQL crash can lose the last moments of it, and those jobs are then run
    again (the lease and resync recover them) — at-least-once, never lost.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Process jobs of ``topics`` (default: every registered topic) until stopped.

    ``burst=True`` exits once the topics have nothing queued (nor scheduled soon);
    ``max_jobs`` exits after that many jobs; ``isolation`` overrides each topic's.
    """

    def __init__(
        self,
        topics: list[str] | None = None,
        *,
        burst: bool = False,
        max_jobs: int | None = None,
        worker_id: str | None = None,
        isolation: str | None = None,
        install_signals: bool = True,
    ):
        if isolation not in (None, "inline", "process"):
            raise ValueError("isolation must be 'inline' or 'process'")
        self.requested_topics = list(topics) if topics else None
        self.topics: list[str] = []
        self.burst = burst
        self.max_jobs = max_jobs
        self.worker_id = worker_id or default_worker_id()
        self.isolation = isolation
        self.install_signals = install_signals
        self.signals_installed = False  # then the worker owns its process (see watchdog.py)
        self.slots: dict[str, TopicLock] = {}
        self.topic_rows: dict[str, Topic] = {}
        self.current: Job | None = None
        self.abort_current = threading.Event()
        self.stopping = False
        self.interrupting = False
        self.processed = 0
        self.started = time.time()
        self._rr = 0
        self._next_slot_try = 0.0
        self._next_maintenance = 0.0
        self._next_sweep = 0.0
        self._pending_ack: Job | None = None
        # The next job, leased (and maybe claimed) while the last success was recorded.
        self._leased: tuple[str, str] | None = None
        self._claimed: tuple[Job, Any] | None = None
        self._idle_since: float | None = None
        self._outage_since: float | None = None
        self.watchdog = Watchdog(self)
        self.heartbeat = Heartbeat(self)
        self.fork_runner = ForkRunner()

    # -- public -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit code (0 on a clean stop, 1 after
        abandoning a handler: see :mod:`.watchdog`)."""
        if not settings.WORKER_SYNCHRONOUS_COMMIT:
            connection_created.connect(_relax_commit_durability, dispatch_uid="jobqueue.worker.commit")
            for conn in connections.all(initialized_only=True):
                if conn.connection is not None:
                    _relax_commit_durability(conn.vendor, conn)
        self.topics = self._resolve_topics()
        if self.install_signals:
            self._install_signal_handlers()
        logger.info("Worker %s serving topics: %s", self.worker_id, ", ".join(self.topics))
        self._call_with_retry(lambda: maintenance.ensure_redis_state(self.topics, force=True))
        if self.isolation == "process" or (
            self.isolation is None and Topic.objects.filter(name__in=self.topics, isolation="process").exists()
        ):
            self.fork_runner.start()  # fork the zygote while this process has a single thread
        self.heartbeat.start()
        try:
            while not self.stopping:
                if not self._iteration():
                    break
                if self.max_jobs is not None and self.processed >= self.max_jobs:
                    logger.info("Worker %s processed %s jobs (--max-jobs); stopping.", self.worker_id, self.processed)
                    break
        finally:
            self.fork_runner.close()
            self.heartbeat.stop()
            if self._pending_ack is not None:
                job = self._pending_ack
                engine.safe_call(engine.ack, job.topic_id, str(job.pk), job.entity_id, success_tally(job))
            self._put_back_next()
            self._release_slots()
            engine.safe_call(engine.forget, self.worker_id)
            logger.info("Worker %s stopped after %s jobs.", self.worker_id, self.processed)
        return 1 if self.watchdog.abandoned else 0

    def stop(self) -> None:
        self.stopping = True

    def info(self) -> dict[str, Any]:
        current = self.current
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "topics": sorted(self.slots),
            "wanted": self.topics,
            "current": [str(current.pk)] if current is not None else [],
            "processed": self.processed,
            "started": self.started,
        }

    # -- the loop ---------------------------------------------------------------------

    def _iteration(self) -> bool:
        """One pass: returns False when a burst worker has nothing left to do."""
        try:
            self._check_connections()
            now = time.monotonic()
            if now >= self._next_slot_try:
                self._take_slots()
                self._next_slot_try = now + SLOT_RETRY_SECONDS
            if now >= self._next_maintenance:
                self._maintain()
                self._next_maintenance = now + MAINTENANCE_SECONDS
            if self._claimed is not None:
                (job, execution), self._claimed = self._claimed, None
                self._idle_since = None
                self._run(job, execution)
                return True
            job_id, topic = self._fetch()
            if self._outage_since is not None:
                self._recovered()
            if job_id is None:
                if self.burst and self._burst_done():
                    return False
                now = time.monotonic()
                if self._idle_since is None:
                    self._idle_since = now
                elif now - self._idle_since >= IDLE_CLOSE_SECONDS:
                    # Idle for a while: honour CONN_MAX_AGE as a request boundary would. Not
                    # between two jobs: with CONN_MAX_AGE = 0 that would reconnect for each job.
                    close_old_connections()
                    self._idle_since = now
                self._wait()
                return True
            self._idle_since = None
            self._process(topic, job_id)
        except redis.RedisError as exc:
            self._outage("Redis", exc)
        except (OperationalError, InterfaceError) as exc:
            for conn in connections.all(initialized_only=True):
                conn.close_if_unusable_or_obsolete()
            self._outage("the database", exc)
        except Exception:
            # A bug outside a handler (a signal receiver, a hook) must not stop the worker;
            # the job it hit, if any, is recovered from its lease.
            logger.exception("Unexpected error in the worker loop; continuing.")
            time.sleep(1.0)
        return True

    def _check_connections(self) -> None:
        """Drop connections that broke; a busy worker otherwise keeps its connection
        (with CONN_MAX_AGE = 0, closing it per job would reconnect for every job)."""
        for conn in connections.all(initialized_only=True):
            if conn.errors_occurred:
                conn.close_if_unusable_or_obsolete()

    def _fetch(self) -> tuple[str | None, str]:
        if self._leased is not None:  # leased for us, but the statement claiming it failed
            (job_id, topic), self._leased = self._leased, None
            return job_id, topic
        pending, self._pending_ack = self._pending_ack, None
        if pending is not None:
            job = pending
            lock = self.slots.get(job.topic_id)
            if lock is not None and len(self.slots) == 1:
                # One round trip acknowledges the last job and leases the next.
                ids = engine.ack_and_pop(job.topic_id, str(job.pk), job.entity_id, 1, slot_token=lock.token,
                                         tally=success_tally(job))
                if ids:
                    return ids[0], job.topic_id
            else:
                engine.ack(job.topic_id, str(job.pk), job.entity_id, success_tally(job))
        owned = [t for t in self.topics if t in self.slots]
        for i in range(len(owned)):
            topic = owned[(self._rr + i) % len(owned)]
            lock = self.slots.get(topic)
            if lock is None:  # lost meanwhile (the heartbeat found its TTL expired)
                continue
            ids = engine.pop(topic, 1, slot_token=lock.token)
            if ids:
                self._rr = (self._rr + i + 1) % max(len(owned), 1)
                return ids[0], topic
        return None, ""

    def _wait(self) -> None:
        """Block until a push wakes us (BLPOP on the owned topics' wake lists), at most a second."""
        keys = [topic_keys(t).wake for t in self.topics if t in self.slots]
        timeout = max(0.05, min(IDLE_WAIT_SECONDS, self._next_maintenance - time.monotonic()))
        if not keys:
            time.sleep(min(timeout, 0.5))
            return
        client = engine.get_redis()
        socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        if socket_timeout:  # a blocking call must return before the socket gives up on it
            timeout = min(timeout, socket_timeout * 0.8)
        client.blpop(keys, timeout=timeout)

    def _process(self, topic: str, job_id: str) -> None:
        claimed = claim(job_id, self.worker_id, os.getpid(), self.topic_rows)
        if claimed is None:
            engine.ack(topic, job_id)  # cancelled or deleted since it was queued
            return
        self._run(*claimed)

    def _run(self, job: Job, execution: Any) -> None:
        """Run a claimed job and record its outcome."""
        self.abort_current.clear()
        self.current = job
        try:
            outcome = self._execute(job, execution)
            if self.watchdog.abandoned:
                return  # its attempt was recorded when the watchdog gave up on it
            if outcome.interrupted:
                self.stopping = True  # also when a real SIGINT reached a worker without signal handlers
            if not outcome.interrupted and (self.abort_current.is_set() or self._abort_seen(job, outcome)):
                outcome.aborted = True
            self._finish(job, execution, outcome)
            datadir.write_output(job, execution, outcome)
        finally:
            self.current = None
            self.processed += 1

    def _execute(self, job: Job, execution: Any) -> Outcome:
        spec = registry.get(job.topic_id)
        if spec is None:
            # As a forked child reports it: a LookupError.
            return Outcome(ok=False, error=f"No handler is registered for topic {job.topic_id!r}.",
                           error_class=exception_class_path(LookupError))
        job.execution = execution  # type: ignore[attr-defined]  # handlers may record output on it
        datadir.write_input(job)
        isolation = self.isolation or job.topic.isolation
        if isolation == "process":
            return self.fork_runner.run(job, job.timeout, self._child_should_stop)
        try:
            self.watchdog.enter(job, job.timeout)
            if self.interrupting:
                raise WorkerInterrupted()
            return run_inline(spec.func, job, job.timeout)
        except WorkerInterrupted:
            return Outcome(ok=False, error="aborted: the worker was stopped", error_class=INTERRUPTED_CLASS,
                           interrupted=True)
        finally:
            self.watchdog.leave()

    def _abort_seen(self, job: Job, outcome: Outcome) -> bool:
        """A handler that saw ``job.should_abort()`` may return before the heartbeat
        notices the cancel request; it was cancelled all the same."""
        if getattr(job, "_abort_seen", False):
            return True
        # A child's job object is not ours: ask Redis (a fork per job dwarfs the call).
        isolation = self.isolation or job.topic.isolation
        return outcome.ok and isolation == "process" and bool(
            engine.safe_call(engine.abort_requested, job.topic_id, str(job.pk))
        )

    def _child_should_stop(self) -> str | bool:
        if self.interrupting:
            return "interrupt"
        return "abort" if self.abort_current.is_set() else False

    def _finish(self, job: Job, execution: Any, outcome: Outcome) -> None:
        """Record the outcome, retrying while the database is unreachable (the heartbeat
        keeps the lease meanwhile); if it never comes back the reaper recovers the job."""
        delay = 0.5
        deadline = time.monotonic() + settings.LEASE_SECONDS * 5
        while True:
            try:
                next_job = NextJob(lambda: self._lease_next(job), self.worker_id, os.getpid(), self.topic_rows)
                if finish(job, execution, outcome, defer_ack=True, next_job=next_job) == JobStatus.SUCCEEDED:
                    earlier, self._pending_ack = self._pending_ack, job
                    if earlier is not None:  # not taken by a lease: acknowledge it alone
                        engine.safe_call(engine.ack, earlier.topic_id, str(earlier.pk), earlier.entity_id,
                                         success_tally(earlier))
                if next_job.claimed is not None:
                    self._leased, self._claimed = None, next_job.claimed
                elif next_job.stranded:
                    self._leased = None  # claimed under its lease, which recovers it
                elif next_job.id is not None:  # cancelled since it was queued
                    self._leased = None
                    engine.safe_call(engine.ack, job.topic_id, next_job.id)
                return
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() > deadline:
                    logger.error("Could not record the outcome of job %s: %s; the reaper will recover it.",
                                 job.pk, exc)
                    return
                logger.warning("Database unavailable while finishing job %s (%s); retrying.", job.pk, exc)
                for conn in connections.all(initialized_only=True):
                    conn.close()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _lease_next(self, job: Job) -> str | None:
        """Lease the job to run after ``job`` (acknowledging the success before it in the
        same call), so that recording ``job``'s success claims it too. Only for a worker
        holding one topic slot, that goes on running jobs."""
        if self._leased is not None:  # leased on an earlier try of this same step
            return self._leased[0]
        lock = self.slots.get(job.topic_id)
        if (lock is None or len(self.slots) != 1 or self.stopping
                or (self.max_jobs is not None and self.processed + 1 >= self.max_jobs)):
            return None
        pending = self._pending_ack
        try:
            if pending is not None and pending.topic_id == job.topic_id:
                ids = engine.ack_and_pop(job.topic_id, str(pending.pk), pending.entity_id, 1, slot_token=lock.token,
                                         tally=success_tally(pending))
                self._pending_ack = None
            else:
                ids = engine.pop(job.topic_id, 1, slot_token=lock.token)
        except redis.RedisError:
            return None  # record the success alone; the loop meets the outage next
        if not ids:
            return None
        self._leased = (ids[0], job.topic_id)
        return ids[0]

    def _put_back_next(self) -> None:
        """On the way out, return a next job claimed or leased for us but never run."""
        if self._claimed is not None:
            (job, _execution), self._claimed = self._claimed, None
            try:
                unclaim(job)
            except DatabaseError:
                logger.exception("Could not put back job %s; its lease will recover it.", job.pk)
        elif self._leased is not None:
            (job_id, topic), self._leased = self._leased, None
            try:
                recover(topic, job_id)  # still queued: back in its queue, no longer leased
            except (DatabaseError, redis.RedisError):
                logger.exception("Could not put back job %s; its lease will recover it.", job_id)

    # -- slots, maintenance, outages -------------------------------------------------

    def _resolve_topics(self) -> list[str]:
        self._call_with_retry(Topic.objects.sync_registered)
        if self.requested_topics is None:
            topics = registry.topics()
            if not topics:
                raise ValueError("No topics to serve: no @handler is registered (give --topics).")
            return topics
        known = set(Topic.objects.values_list("name", flat=True)) | set(registry.topics())
        # A resolver's topic (shell, a script, a task queue) may have no row before its first job.
        unknown = [t for t in self.requested_topics if t not in known and registry.get(t) is None]
        if unknown:
            raise ValueError(f"Unknown topic(s): {', '.join(unknown)}. Known topics: {', '.join(sorted(known))}.")
        return list(dict.fromkeys(self.requested_topics))

    def _take_slots(self) -> None:
        self.topic_rows = {t.name: t for t in Topic.objects.filter(name__in=self.topics)}
        for topic in self.topics:
            row = self.topic_rows.get(topic)
            limit = max(1, row.concurrency if row else 1)
            if topic in self.slots:
                continue
            lock = TopicLock(topic, token=f"{self.worker_id}", worker_id=self.worker_id)
            if lock.acquire(limit=limit):
                self.slots[topic] = lock
                logger.info("Worker %s took a slot of topic %s (%s allowed).", self.worker_id, topic, limit)
            else:
                logger.debug("Topic %s is at its concurrency limit (%s); will retry.", topic, limit)

    def _release_slots(self) -> None:
        for topic, lock in list(self.slots.items()):
            engine.safe_call(lock.release)
            self.slots.pop(topic, None)

    def _maintain(self) -> None:
        maintenance.ensure_redis_state(self.topics)
        maintenance.reconcile(self.topics)
        maintenance.promote(self.topics)
        maintenance.reap(self.topics)
        if time.monotonic() >= self._next_sweep:
            maintenance.sweep_waiting()
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
        maintenance.run_hooks(self)

    def _burst_done(self) -> bool:
        """Nothing queued in the topics we hold (unless paused), nothing scheduled soon."""
        owned = [t for t in self.topics if t in self.slots]
        for topic in owned:
            if engine.depths(topic)["queued"] and not engine.is_paused(topic):
                return False
        horizon = timezone.now() + dt.timedelta(seconds=BURST_SCHEDULE_HORIZON)
        return not Job.objects.filter(topic_id__in=owned, status=JobStatus.SCHEDULED, run_after__lt=horizon).exists()

    def _outage(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            logger.error("Lost contact with %s: %s; retrying with backoff.", what, exc)
        spent = now - self._outage_since
        time.sleep(min(0.2 * 2 ** min(spent, 5), 5.0) * random.uniform(0.8, 1.2))

    def _recovered(self) -> None:
        logger.warning("Connection restored after %.1fs; rebuilding Redis from the database.",
                       time.monotonic() - (self._outage_since or time.monotonic()))
        self._outage_since = None
        maintenance.ensure_redis_state(self.topics, force=True)
        self._next_slot_try = 0.0

    def _call_with_retry(self, func: Any, attempts: int = 30) -> Any:
        delay = 0.2
        for attempt in range(attempts):
            try:
                return func()
            except (redis.RedisError, DatabaseError) as exc:
                if attempt == attempts - 1 or self.stopping:
                    raise
                logger.warning("Start-up step failed (%s); retrying.", exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- signals ----------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.signals_installed = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self.stopping:
            self.stopping = True
            logger.warning("%s received: finishing the current job, then stopping (again to abort it).", name)
            return
        self.interrupting = True
        logger.warning("%s received again: aborting the current job.", name)
        if self.watchdog.in_handler:
            # A handler may swallow the interrupt (``except BaseException``): the watchdog
            # abandons it if it does not stop soon.
            self.watchdog.request_stop()
            raise WorkerInterrupted()
