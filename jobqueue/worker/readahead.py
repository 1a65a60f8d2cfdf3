"""The worker's read-ahead: its next jobs, leased (and maybe claimed) while the last
one's success is recorded; a few more job ids leased in the same Redis call (the
batch); the successes not recorded yet (held); and the recorded successes whose Redis
acknowledgements wait to ride on the next such call.

A worker holding one topic slot calls Redis once per batch of jobs, not twice per job:
one ``acks_and_pop`` call acknowledges the successes recorded since the last call and
leases up to :attr:`ReadAhead.prefetch` ids. On PostgreSQL the worker also writes to
the database once per batch (:class:`~jobqueue.transitions.attempt.NextJob`): the
statement that records the held successes claims the whole next batch, and while
claimed jobs are left to run their (quiet) successes are held, to be recorded with
the next such statement. Elsewhere a job is claimed when it is about to start, and
each success is recorded when it ends.

The batch stays small. Its size adapts to how long the worker's recent jobs took: a
batch holds at most :data:`PREFETCH_WINDOW_SECONDS` of work (and at most
``WORKER_PREFETCH`` jobs), so a job of higher priority pushed meanwhile, a pause or
another worker of the topic waits that long at most, and a held success is recorded
about that long after it ended; after a slow job the worker leases one job at a time
again. Each leased id has its own lease, renewed by the heartbeat
(:meth:`ReadAhead.held_leases`); an id of the batch whose lease is gone (the job was
cancelled, or the lease reclaimed) is skipped. Jobs not yet run go back to their queue
when the worker stops (:meth:`ReadAhead.give_back`), and their leases to the reaper
if it dies (a job claimed ahead then counts an attempt, as Oban's and River's do).

The next jobs go through explicit stages (:class:`Stage`)::

    EMPTY ──lease──▶ LEASED ──claim──▶ CLAIMED ──take (the last)──▶ EMPTY
                     LEASED ──take_lease──▶ EMPTY (the loop claims the first, or acknowledges it)

and :meth:`ReadAhead.give_back` returns whatever is held when the worker stops. A move
from a stage that does not allow it raises :class:`IllegalMove`. The batch, the held
successes and the held acknowledgements are independent of the stage.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import redis
from django.db import DatabaseError

from .. import engine
from ..logging import job_extra, job_id_extra
from .lifecycle import NextJob, give_back, success_tally, unclaim

if TYPE_CHECKING:
    from ..models import Execution, Job

logger = logging.getLogger("jobqueue.worker")

#: Seconds of work (at the pace of the worker's recent jobs) one batch of leased ids holds at most.
PREFETCH_WINDOW_SECONDS = 0.05


class IllegalMove(RuntimeError):
    """A read-ahead move asked of a stage that does not allow it (a bug in the caller)."""


class Stage(enum.Enum):
    """Where the worker's next job stands."""

    #: No next job.
    EMPTY = "empty"
    #: Their ids are leased in Redis; their rows are not claimed.
    LEASED = "leased"
    #: Their rows are claimed (running, each with an unsaved Execution); the loop has not
    #: started them.
    CLAIMED = "claimed"


class ReadAhead:
    """The next jobs of one worker, the ids leased after them, the successes not yet
    recorded, and those whose acknowledgement waits for the next Redis call.

    The heartbeat thread reads :meth:`held_leases` and calls :meth:`lost`; everything
    else is the worker loop's. The batch and the claimed jobs are tuples, replaced
    rather than changed, so the heartbeat always reads a whole one.
    """

    def __init__(self) -> None:
        self._stage = Stage.EMPTY
        self._lease: tuple[tuple[str, ...], str] | None = None  # (job ids, topic) while LEASED
        self._claimed: tuple[tuple[Job, Execution], ...] = ()  # while CLAIMED, in the order they run
        #: Successes run and not recorded yet (job, storable result, Execution), oldest first:
        #: the list a :class:`NextJob` records from (see :attr:`held`).
        self.held: list[tuple[Job, Any, Execution]] = []
        self._held_since = 0.0  # time.monotonic() when the oldest held success was held
        self._unacked: list[Job] = []
        self._batch: tuple[str, ...] = ()  # ids of _batch_topic leased for us, in pop order
        self._batch_topic = ""
        self._lost: set[str] = set()  # batch ids whose lease the heartbeat found gone
        self._cancelled: set[str] = set()  # claimed ids the heartbeat found a cancel request for
        self._pace: float | None = None  # seconds per job, recent (see observe())

    def __repr__(self) -> str:
        unacked = [job.pk for job in self._unacked]
        return (f"<ReadAhead {self._stage.name} claimed={len(self._claimed)} batch={len(self._batch)} "
                f"held={len(self.held)} unacked={unacked}>")

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def leased_id(self) -> str | None:
        """The id of the first leased next job (``None`` unless :attr:`Stage.LEASED`)."""
        return self._lease[0][0] if self._lease is not None else None

    @property
    def leased_ids(self) -> list[str]:
        """The ids of the leased next jobs (empty unless :attr:`Stage.LEASED`)."""
        return list(self._lease[0]) if self._lease is not None else []

    @property
    def unacked(self) -> tuple[Job, ...]:
        """The last successes, recorded in the database and still leased in Redis."""
        return tuple(self._unacked)

    @property
    def batch(self) -> tuple[str, ...]:
        """The ids leased for us after the next jobs, in the order they will run."""
        return self._batch

    def _expect(self, stage: Stage, move: str) -> None:
        if self._stage is not stage:
            raise IllegalMove(f"cannot {move} the next job: it is {self._stage.name}, not {stage.name}")

    # -- the next jobs --------------------------------------------------------------------

    def lease(self, job_id: str, topic: str, *more: str) -> None:
        """EMPTY → LEASED: ``job_id`` (and ``more``) of ``topic`` were leased for us in Redis."""
        self._expect(Stage.EMPTY, "lease")
        self._stage, self._lease = Stage.LEASED, ((job_id, *more), topic)

    def claim(self, job: Job, execution: Execution, *more: tuple[Job, Execution]) -> None:
        """LEASED → CLAIMED: the leased jobs' rows were claimed for us (``job`` runs first)."""
        self._expect(Stage.LEASED, "claim")
        self._stage, self._lease, self._claimed = Stage.CLAIMED, None, ((job, execution), *more)

    def take(self) -> tuple[Job, Execution]:
        """CLAIMED → CLAIMED, or EMPTY after the last: hand the first claimed job and its
        Execution to the loop to run."""
        self._expect(Stage.CLAIMED, "take")
        first, self._claimed = self._claimed[0], self._claimed[1:]
        if not self._claimed:
            self._stage = Stage.EMPTY
        return first

    def take_lease(self) -> tuple[str, str]:
        """LEASED → EMPTY: hand over the first leased ``(job id, topic)``, for the loop to
        claim (the statement that would have claimed it failed) or to acknowledge; the
        other leased ids go back to the front of the batch."""
        self._expect(Stage.LEASED, "take the lease of")
        assert self._lease is not None
        (job_id, *rest), topic = self._lease
        self._stage, self._lease = Stage.EMPTY, None
        if rest:
            if self._batch and self._batch_topic != topic:
                self.give_back_batch()
            self._batch, self._batch_topic = (*rest, *self._batch), topic
        return job_id, topic

    def lease_next(self, topic: str, slot_token: str, count: int = 1) -> list[str]:
        """EMPTY → LEASED: the next jobs of ``topic`` (whose slot ``slot_token`` is ours):
        the whole batch if there is one, else up to ``count`` ids leased in one Redis call
        that also acknowledges the recorded successes of ``topic`` (see :meth:`next_id`).

        Returns the leased ids: none if the queue is empty or Redis is unreachable (the
        successes are then recorded alone, and the loop meets the outage next).
        """
        self._expect(Stage.EMPTY, "lease")
        if self._batch and self._batch_topic != topic:
            self.give_back_batch()
        ids = [job_id for job_id in self._batch if job_id not in self._lost]
        self._batch, self._lost = (), set()
        if not ids:
            try:
                ids = self._acks_and_pop(topic, slot_token, count)
            except redis.RedisError:
                return []
        if ids:
            self.lease(ids[0], topic, *ids[1:])
        return ids

    def next_id(self, topic: str, slot_token: str, count: int = 1) -> str | None:
        """The id of the next job of ``topic`` to run: the batch's first, else one of up
        to ``count`` ids leased in one Redis call that also acknowledges the successes
        of ``topic`` held back (the others stay in the batch). ``None`` if nothing is
        queued. A batch of another topic is given back first.

        Raises :class:`redis.RedisError` (the held successes then stay held).
        """
        if self._batch and self._batch_topic != topic:
            self.give_back_batch()
        while self._batch:
            job_id, self._batch = self._batch[0], self._batch[1:]
            if job_id in self._lost:  # cancelled, or reclaimed: no longer ours to run
                self._lost.discard(job_id)
                continue
            return job_id
        ids = self._acks_and_pop(topic, slot_token, count)
        if not ids:
            return None
        self._lost.clear()
        self._batch, self._batch_topic = tuple(ids[1:]), topic
        return ids[0]

    def adopt(self, topic: str, ids: list[str]) -> None:
        """Ids of ``topic`` leased for us by the pop behind the worker's wait
        (:func:`~jobqueue.engine.wait_and_pop`): they are the batch now."""
        if ids:
            self._expect(Stage.EMPTY, "adopt")
            if self._batch:
                raise RuntimeError(f"adopt with a batch already leased: {self!r}")
            self._lost.clear()
            self._batch, self._batch_topic = tuple(ids), topic

    def _acks_and_pop(self, topic: str, slot_token: str, count: int) -> list[str]:
        """Lease up to ``count`` ids of ``topic`` in the Redis call that acknowledges the
        recorded successes of ``topic`` (those of other topics are acknowledged apart).

        Raises :class:`redis.RedisError` (the successes then stay unacknowledged).
        """
        held = [job for job in self._unacked if job.topic_id == topic]
        ids: list[str] = engine.acks_and_pop(topic, [_ack_item(job) for job in held], count, slot_token=slot_token)
        if held:
            self._unacked = [job for job in self._unacked if job.topic_id != topic]
        if self._unacked:  # of a topic whose slot the worker no longer holds
            self.flush_acks()
        return ids

    def settle(self, next_job: NextJob) -> None:
        """After the statement that recorded successes and was offered ``next_job``: its
        recorded successes wait for their acknowledgement (:meth:`hold_ack`); LEASED →
        CLAIMED with the jobs it claimed, else LEASED → EMPTY. A leased job it did not
        claim is given back (cancelled since it was queued: acknowledged, see
        :func:`~jobqueue.transitions.recovery.give_back`), unless it was claimed but not
        started (left to its lease). Nothing else changes if no such statement ran."""
        for job in next_job.recorded:
            self.hold_ack(job)
        next_job.recorded = []
        if not next_job.ids:
            return
        self._expect(Stage.LEASED, "settle")
        assert self._lease is not None
        topic = self._lease[1]
        self._stage, self._lease = Stage.EMPTY, None
        if next_job.claimed:
            self._stage, self._claimed = Stage.CLAIMED, tuple(next_job.claimed)
        claimed = {str(job.pk) for job, _execution in next_job.claimed}
        for job_id in next_job.ids:
            if job_id not in claimed and job_id not in next_job.stranded:
                engine.safe_call(give_back, topic, job_id)

    # -- the held successes ---------------------------------------------------------------

    def may_hold(self, now: float) -> bool:
        """Whether a success ending now may wait for a later statement: claimed jobs are
        left to run, and the oldest held success waited less than a batch's window."""
        return bool(self._claimed) and (not self.held or now - self._held_since < PREFETCH_WINDOW_SECONDS)

    def holding(self, now: float) -> None:
        """Note the time a first success joined :attr:`held`."""
        if len(self.held) == 1:
            self._held_since = now

    # -- how many ids to lease --------------------------------------------------------------

    def observe(self, seconds: float) -> None:
        """Note that a job took ``seconds`` (run and recorded): a slower job than the pace
        sets it at once, faster ones bring it down by halves."""
        pace = self._pace
        self._pace = seconds if pace is None or seconds >= pace else (pace + seconds) / 2

    def prefetch(self, most: int) -> int:
        """How many ids to lease in the next Redis call: as many jobs as fit in
        :data:`PREFETCH_WINDOW_SECONDS` at the recent pace, between 1 and ``most``
        (1 until a job was observed)."""
        if most <= 1 or self._pace is None:
            return 1
        return max(1, min(most, int(PREFETCH_WINDOW_SECONDS / max(self._pace, 1e-6))))

    # -- the held acknowledgements --------------------------------------------------------

    def hold_ack(self, job: Job) -> None:
        """Hold back the acknowledgement of ``job``'s success until the next Redis call
        for its topic (:meth:`next_id`), which carries every one held."""
        self._unacked.append(job)

    def take_ack(self) -> Job | None:
        """Hand over the oldest held success (``None`` if there is none) for the caller
        to acknowledge; it is no longer held."""
        return self._unacked.pop(0) if self._unacked else None

    def flush_acks(self) -> None:
        """Acknowledge every held success now: one call per topic."""
        by_topic: dict[str, list[Job]] = defaultdict(list)
        for job in self._unacked:
            by_topic[job.topic_id].append(job)
        self._unacked = []
        for topic, jobs in by_topic.items():
            engine.safe_call(engine.acks_and_pop, topic, [_ack_item(job) for job in jobs], 0)

    # -- the heartbeat ----------------------------------------------------------------------

    def held_leases(self) -> dict[str, list[str]]:
        """Per topic, the ids whose leases are ours but whose jobs are not the running
        one: the next jobs, the batch, the held successes and those recorded but not
        acknowledged (for the heartbeat to renew)."""
        held: dict[str, list[str]] = defaultdict(list)
        lease, claimed, batch, topic = self._lease, self._claimed, self._batch, self._batch_topic
        if lease is not None:
            held[lease[1]].extend(lease[0])
        for job, _execution in claimed:
            held[job.topic_id].append(str(job.pk))
        held[topic].extend(batch)
        for job, _result, _execution in tuple(self.held):
            held[job.topic_id].append(str(job.pk))
        for job in tuple(self._unacked):
            held[job.topic_id].append(str(job.pk))
        return {t: ids for t, ids in held.items() if ids}

    def claimed_ids(self) -> dict[str, list[str]]:
        """Per topic, the ids of the claimed jobs waiting to run (for the heartbeat to
        look for their cancel requests)."""
        ids: dict[str, list[str]] = defaultdict(list)
        for job, _execution in self._claimed:
            ids[job.topic_id].append(str(job.pk))
        return ids

    def cancelled(self, job_ids: list[str]) -> None:
        """The heartbeat found cancel requests for these claimed jobs: they never start
        (see :meth:`was_cancelled`)."""
        self._cancelled.update(job_ids)

    def was_cancelled(self, job: Job) -> bool:
        """Whether a cancel request for ``job``, just taken, was seen before it started."""
        if not self._cancelled:
            return False
        job_id = str(job.pk)
        seen = job_id in self._cancelled
        self._cancelled.discard(job_id)
        return seen

    def lost(self, job_ids: list[str]) -> None:
        """The heartbeat found these leases gone: an id of the batch among them is skipped."""
        self._lost.update(job_ids)

    # -- stopping -------------------------------------------------------------------------

    def give_back_batch(self) -> None:
        """Put the batch's ids back in their queue (queued again, never started)."""
        batch, topic, self._batch = self._batch, self._batch_topic, ()
        for job_id in batch:
            if job_id in self._lost:
                continue
            try:
                give_back(topic, job_id)  # still queued: back in its queue, no longer leased
            except (DatabaseError, redis.RedisError):
                logger.exception("Could not put back job %s; its lease will recover it.", job_id,
                                 extra=job_id_extra(job_id, topic))
        self._lost.clear()

    def give_back(self) -> None:
        """On the way out: acknowledge the recorded successes, and put back the next jobs
        and the batch, leased or claimed for us but never run (queued again, the attempts
        not counted). What cannot be put back now is recovered from its lease. (The held
        successes are the worker's to record first.)"""
        self.flush_acks()
        while self._stage is Stage.CLAIMED:
            job, _execution = self.take()
            try:
                unclaim(job)
            except DatabaseError:
                logger.exception("Could not put back job %s; its lease will recover it.", job.pk,
                                 extra=job_extra(job))
        if self._stage is Stage.LEASED:
            job_id, topic = self.take_lease()  # the other leased ids join the batch
            try:
                give_back(topic, job_id)  # still queued: back in its queue, no longer leased
            except (DatabaseError, redis.RedisError):
                logger.exception("Could not put back job %s; its lease will recover it.", job_id,
                                 extra=job_id_extra(job_id, topic))
        self.give_back_batch()


def _ack_item(job: Job) -> tuple[str, str, str]:
    """A held success as ``acks_and_pop`` takes it."""
    return str(job.pk), job.entity_id or "", success_tally(job)
