"""The worker: take topic slots, wait for work, run one job at a time, recover others'.

First SIGTERM/SIGINT: finish the current job, release slots, exit 0. Second: abort
the current job (its Execution marked aborted, the job requeued) and exit.

This module is the loop; its parts live beside it: the topic slots (:mod:`.slots`),
the next job read ahead (:mod:`.readahead`), outages (:mod:`.outage`), database
connections (:mod:`.connections`), stop signals (:mod:`.stopping`), the heartbeat,
the watchdog, the runners and maintenance.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from .. import engine, registry, tracing
from ..conf import settings
from ..engine import TopicLock
from ..logging import job_extra
from ..models import Job, JobStatus, Topic
from ..storable import exception_class_path
from . import connections, datadir, maintenance
from .forking import ForkRunner
from .heartbeat import Heartbeat
from .lifecycle import HELD, NextJob, Outcome, claim, finish, give_back, record_held
from .outage import Outage, call_with_retry
from .readahead import ReadAhead, Stage
from .runner import INTERRUPTED_CLASS, WorkerInterrupted, run_inline
from .slots import configure_flow, owned_topics, release_slots, resolve_topics, take_slots, topic_rows
from .stopping import install_stop_signals
from .watchdog import Watchdog

logger = logging.getLogger("jobqueue.worker")

#: Seconds between two attempts to take the slots of topics at their concurrency limit.
SLOT_RETRY_SECONDS = 2.0
#: Seconds between two maintenance passes (promote, reap, sentinel check).
MAINTENANCE_SECONDS = 1.0
#: Seconds between two sweeps for waiting jobs whose dependencies already finished.
SWEEP_SECONDS = 5.0
#: Seconds between two roll-ups of finished rows into the metrics tally (once caught up).
ROLLUP_SECONDS = 30.0
#: Seconds a worker waits idle before it lets Django close old database connections.
IDLE_CLOSE_SECONDS = 30.0
#: Longest wait for new work before looking around again (seconds).
IDLE_WAIT_SECONDS = 1.0
#: A burst worker still waits for scheduled jobs due within this many seconds.
BURST_SCHEDULE_HORIZON = 60.0


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
        self._turns: dict[str, bool] = {}  # topics taking turns between job keys (see configure_flow)
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
        self._next_rollup = 0.0
        self.readahead = ReadAhead()
        self._idle_since: float | None = None
        self.outage = Outage()
        self.watchdog = Watchdog(self)
        self.heartbeat = Heartbeat(self)
        self.fork_runner = ForkRunner()

    # -- public -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the process exit code (0 on a clean stop, 1 after
        abandoning a handler: see :mod:`.watchdog`)."""
        if not settings.WORKER_SYNCHRONOUS_COMMIT:
            connections.relax_commit_durability()
        call_with_retry(Topic.objects.sync_registered, give_up=lambda: self.stopping)
        self.topics = resolve_topics(self.requested_topics)
        if self.install_signals:
            self.signals_installed = install_stop_signals(self)
        logger.info("Worker %s serving topics: %s", self.worker_id, ", ".join(self.topics))
        call_with_retry(lambda: maintenance.ensure_redis_state(self.topics, force=True), give_up=lambda: self.stopping)
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
            self._record_held()
            self.heartbeat.stop()
            self.readahead.give_back()
            release_slots(self.slots)
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
            connections.drop_broken()
            now = time.monotonic()
            if now >= self._next_slot_try:
                self._take_slots()
                self._next_slot_try = now + SLOT_RETRY_SECONDS
            if now >= self._next_maintenance:
                self._maintain()
                self._next_maintenance = now + MAINTENANCE_SECONDS
            if self.readahead.stage is Stage.CLAIMED:
                self._idle_since = None
                self._run_claimed(*self.readahead.take())
                return True
            job_id, topic = self._fetch()
            if self.outage.ongoing:
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
                if not self._wait() or self.stopping:
                    return True
                # Woken with the next jobs leased: the first is claimed now, not after
                # another pass through the checks above (made just before the wait).
                job_id, topic = self._fetch()
                if job_id is None:
                    return True
            self._idle_since = None
            self._process(topic, job_id)
        except redis.RedisError as exc:
            self.outage.back_off("Redis", exc)
        except (OperationalError, InterfaceError) as exc:
            connections.close_unusable()
            self.outage.back_off("the database", exc)
        except Exception:
            # A bug outside a handler (a signal receiver, a hook) must not stop the worker;
            # the job it hit, if any, is recovered from its lease.
            logger.exception("Unexpected error in the worker loop; continuing.")
            time.sleep(1.0)
        return True

    def _fetch(self) -> tuple[str | None, str]:
        if self.readahead.stage is Stage.LEASED:  # leased for us, but the statement claiming it failed
            return self.readahead.take_lease()
        held = list(self.slots.items())  # the heartbeat may drop a slot meanwhile
        if len(held) == 1:
            # One slot: the batch's next id, or one call that acknowledges the held
            # successes and leases the next batch (see readahead.py).
            [(topic, slot)] = held
            if self.readahead.batch or self.readahead.unacked or not engine.flow.wait_seconds(topic):
                job_id = self.readahead.next_id(topic, slot.token, self._prefetch(topic, 0))
                if job_id is not None:
                    return job_id, topic
            self.readahead.flush_acks()  # of a topic whose slot is gone
            return None, ""
        if self.readahead.batch:  # leased while the worker held one slot
            self.readahead.give_back_batch()
        self.readahead.flush_acks()
        owned = owned_topics(self.topics, self.slots)
        for i in range(len(owned)):
            topic = owned[(self._rr + i) % len(owned)]
            lock = self.slots.get(topic)
            if lock is None:  # lost meanwhile (the heartbeat found its TTL expired)
                continue
            if engine.flow.wait_seconds(topic):  # rate limited (or its keys full): serve the others
                continue
            ids = engine.pop(topic, 1, slot_token=lock.token)
            if ids:
                self._rr = (self._rr + i + 1) % max(len(owned), 1)
                return ids[0], topic
        return None, ""

    def _prefetch(self, topic: str, ahead: int) -> int:
        """How many ids of ``topic`` to lease in one call, the next job ``ahead`` of the
        one about to run or record (see :meth:`.ReadAhead.prefetch`): one for a topic
        with flow options, none beyond ``max_jobs``."""
        count = 1 if engine.flow.limits(topic) is not None else self.readahead.prefetch(settings.WORKER_PREFETCH)
        if self.max_jobs is not None:
            count = min(count, self.max_jobs - self.processed - ahead)
        return max(count, 1)

    def _wait(self) -> bool:
        """Block until a push wakes us (BLPOP on the owned topics' wake lists), at most a
        second. True if the wait leased the next jobs as it returned (see
        :meth:`_may_pop_behind_wait`)."""
        owned = owned_topics(self.topics, self.slots)
        rate_waits = {t: engine.flow.wait_seconds(t) for t in owned}
        waits = [w for w in rate_waits.values() if w]
        # A topic waiting for its rate limit is not woken by pushes: it is asked again when due.
        wakeable = [t for t, w in rate_waits.items() if not w]
        timeout = max(0.05, min(IDLE_WAIT_SECONDS, self._next_maintenance - time.monotonic(), *waits))
        if not wakeable:
            time.sleep(min(timeout, 0.5))
            return False
        lock = self.slots.get(wakeable[0]) if len(wakeable) == 1 else None  # the heartbeat may drop it
        if lock is not None and self._may_pop_behind_wait(wakeable[0]):
            # Woken, the next jobs are leased in the same round trip (the pop behind the wait).
            [topic] = wakeable
            ids = engine.wait_and_pop(topic, self._prefetch(topic, 0), lock.token, timeout)
            self.readahead.adopt(topic, ids)
            return bool(ids)
        engine.wait_for_push(wakeable, timeout)
        return False

    def _may_pop_behind_wait(self, topic: str) -> bool:
        """Whether the wait on ``topic`` may lease its next jobs as it returns: the worker
        holds that slot only, nothing leased or unacknowledged, and the topic has no flow
        options (whose pop is another script)."""
        return (len(self.slots) == 1 and not self.stopping
                and self.readahead.stage is Stage.EMPTY and not self.readahead.batch
                and not self.readahead.unacked and engine.flow.limits(topic) is None)

    def _process(self, topic: str, job_id: str) -> None:
        claimed = claim(job_id, self.worker_id, os.getpid(), self.topic_rows)
        if claimed is None:
            give_back(topic, job_id)  # cancelled or deleted since it was queued (or running elsewhere)
            return
        self._run(*claimed)

    def _run_claimed(self, job: Job, execution: Any) -> None:
        """Run a job claimed ahead (see :mod:`.readahead`): it starts now, unless the
        heartbeat saw a cancel request for it meanwhile (then it ends cancelled, never
        started; a request it has not seen yet reaches the job as a running one's does)."""
        job.started_at = execution.started_at = timezone.now()
        if self.readahead.was_cancelled(job):
            self._finish(job, execution, Outcome(ok=False, aborted=True, error="cancelled before it started"))
            self.processed += 1
            return
        self._run(job, execution)

    def _run(self, job: Job, execution: Any) -> None:
        """Run a claimed job and record its outcome."""
        if self.abort_current.is_set():  # (a read; clear() takes the event's lock)
            self.abort_current.clear()
        self.current = job
        began = time.monotonic()
        try:
            # The span is current while the outcome is recorded: chained jobs continue its trace.
            with tracing.job_span(job) as span:
                outcome = self._execute(job, execution)
                if self.watchdog.abandoned:
                    span.ended(execution, outcome.exception)
                    return  # its attempt was recorded when the watchdog gave up on it
                if outcome.interrupted:
                    self.stopping = True  # also when a real SIGINT reached a worker without signal handlers
                if not outcome.interrupted and (self.abort_current.is_set() or self._abort_seen(job, outcome)):
                    outcome.aborted = True
                self._finish(job, execution, outcome)
                span.ended(execution, outcome.exception)
            datadir.write_output(job, execution, outcome)
        finally:
            self.current = None
            self.processed += 1
            self.readahead.observe(time.monotonic() - began)

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
        keeps the lease meanwhile); if it never comes back the reaper recovers the job.

        A quiet success is held instead while claimed jobs are left to run (see
        :mod:`.readahead`); the held ones are recorded with the next success that is
        not, or right after any other outcome that ends the batch."""
        delay = 0.5
        deadline = time.monotonic() + settings.LEASE_SECONDS * 5
        while True:
            try:
                now = time.monotonic()
                next_job = self._next_job(lambda: self._lease_next(job),
                                          may_hold=not self.stopping and self.readahead.may_hold(now))
                if finish(job, execution, outcome, defer_ack=True, next_job=next_job) == HELD:
                    self.readahead.holding(now)
                elif self.readahead.held and not next_job.may_hold:
                    record_held(next_job)  # after a failure (or a success recorded alone) that ends the batch
                self.readahead.settle(next_job)
                return
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() > deadline:
                    logger.error("Could not record the outcome of job %s: %s; the reaper will recover it.",
                                 job.pk, exc, extra=job_extra(job))
                    return
                logger.warning("Database unavailable while finishing job %s (%s); retrying.", job.pk, exc,
                               extra=job_extra(job))
                connections.close_all()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _next_job(self, lease: Callable[[], list[str]], may_hold: bool = False) -> NextJob:
        """The offer that records the held successes and claims what ``lease`` leases."""
        return NextJob(lease, self.worker_id, os.getpid(), self.topic_rows, held=self.readahead.held,
                       may_hold=may_hold)

    def _record_held(self) -> None:
        """Record the successes still held (the worker is stopping); if the database is
        unreachable they are left to their leases, and run again."""
        if not self.readahead.held:
            return
        try:
            next_job = self._next_job(lambda: [])  # nothing more to run
            record_held(next_job)
            self.readahead.settle(next_job)
        except Exception:
            logger.exception("Could not record %s finished job(s); they will run again.", len(self.readahead.held))

    def _lease_next(self, job: Job) -> list[str]:
        """Lease the jobs to run after ``job`` (see :mod:`.readahead`), so that recording
        ``job``'s success claims them too. Only for a worker holding one topic slot, that
        goes on running jobs, and has no claimed job left to run."""
        if self.readahead.stage is Stage.LEASED:  # leased on an earlier try of this same step
            return self.readahead.leased_ids
        lock = self.slots.get(job.topic_id)
        if (lock is None or len(self.slots) != 1 or self.stopping or self.readahead.stage is Stage.CLAIMED
                or (self.max_jobs is not None and self.processed + 1 >= self.max_jobs)):
            return []
        return self.readahead.lease_next(job.topic_id, lock.token, self._prefetch(job.topic_id, 1))

    # -- slots, maintenance, outages -------------------------------------------------

    def _take_slots(self) -> None:
        self.topic_rows = topic_rows(self.topics)
        configure_flow(self.topics, self.topic_rows, self._turns)
        take_slots(self.worker_id, self.topics, self.slots, self.topic_rows)

    def _maintain(self) -> None:
        maintenance.ensure_redis_state(self.topics)
        maintenance.reconcile(self.topics)
        maintenance.promote(self.topics)
        maintenance.repair_key_queues([t for t in self.topics if self._turns.get(t)])
        maintenance.reap(self.topics)
        if time.monotonic() >= self._next_sweep:
            maintenance.sweep_waiting()
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
        if time.monotonic() >= self._next_rollup:
            more = maintenance.roll_up_metrics(ROLLUP_SECONDS)  # until caught up, once a pass
            self._next_rollup = time.monotonic() + (0.0 if more else ROLLUP_SECONDS)
        maintenance.run_hooks(self)

    def _burst_done(self) -> bool:
        """Nothing queued in the topics we hold (unless paused), nothing scheduled soon."""
        owned = owned_topics(self.topics, self.slots)
        for topic in owned:
            if engine.depths(topic)["queued"] and not engine.is_paused(topic):
                return False
        horizon = timezone.now() + dt.timedelta(seconds=BURST_SCHEDULE_HORIZON)
        return not Job.objects.filter(topic_id__in=owned, status=JobStatus.SCHEDULED, run_after__lt=horizon).exists()

    def _recovered(self) -> None:
        self.outage.end()
        maintenance.ensure_redis_state(self.topics, force=True)
        self._next_slot_try = 0.0
