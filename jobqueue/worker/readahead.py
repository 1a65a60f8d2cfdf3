"""The worker's read-ahead: its next job, leased (and maybe claimed) while the last one's
success is recorded; a few more job ids leased in the same Redis call (the batch); and
the recorded successes whose Redis acknowledgements wait to ride on the next such call.

A worker holding one topic slot calls Redis once per batch of jobs, not twice per job:
one ``acks_and_pop`` call acknowledges the successes held since the last call and
leases up to :attr:`ReadAhead.prefetch` ids, which the worker then runs one by one. On
PostgreSQL the statement recording a success also claims the next job
(:class:`~jobqueue.transitions.attempt.NextJob`): one statement per job, not two. A job
is claimed (marked running) only when it is about to start; until then it is queued in
the database and leased in Redis.

The batch stays small. Its size adapts to how long the worker's recent jobs took: a
batch holds at most :data:`PREFETCH_WINDOW_SECONDS` of work (and at most
``WORKER_PREFETCH`` jobs), so a job of higher priority pushed meanwhile, a pause or
another worker of the topic waits that long at most; after a slow job the worker leases
one job at a time again. Each leased id has its own lease, renewed by the heartbeat
(:meth:`ReadAhead.held_leases`); an id whose lease is gone (the job was cancelled, or
the lease reclaimed) is skipped. Ids not yet run go back to their queue when the worker
stops (:meth:`ReadAhead.give_back`), and their leases to the reaper if it dies.

The next job goes through explicit stages (:class:`Stage`)::

    EMPTY ──lease──▶ LEASED ──claim──▶ CLAIMED ──take──▶ EMPTY (the loop runs it)
                     LEASED ──take_lease──▶ EMPTY (the loop claims it, or acknowledges it)

and :meth:`ReadAhead.give_back` returns whatever is held when the worker stops. A move
from a stage that does not allow it raises :class:`IllegalMove`. The batch and the held
acknowledgements are independent of the stage.
"""

from __future__ import annotations

import enum
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

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
    #: Its id is leased in Redis; its row is not claimed.
    LEASED = "leased"
    #: Its row is claimed (running, with an unsaved Execution); the loop has not started it.
    CLAIMED = "claimed"


class ReadAhead:
    """The next job of one worker, the ids leased after it, and the successes whose
    acknowledgement waits for the next Redis call.

    The heartbeat thread reads :meth:`held_leases` and calls :meth:`lost`; everything
    else is the worker loop's. The batch is a tuple, replaced rather than changed, so the
    heartbeat always reads a whole one.
    """

    def __init__(self) -> None:
        self._stage = Stage.EMPTY
        self._lease: tuple[str, str] | None = None  # (job id, topic) while LEASED
        self._claimed: tuple[Job, Execution] | None = None  # while CLAIMED
        self._unacked: list[Job] = []
        self._batch: tuple[str, ...] = ()  # ids of _batch_topic leased for us, in pop order
        self._batch_topic = ""
        self._lost: set[str] = set()  # batch ids whose lease the heartbeat found gone
        self._pace: float | None = None  # seconds per job, recent (see observe())

    def __repr__(self) -> str:
        unacked = [job.pk for job in self._unacked]
        return f"<ReadAhead {self._stage.name} batch={len(self._batch)} unacked={unacked}>"

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def leased_id(self) -> str | None:
        """The id of the leased next job (``None`` unless :attr:`Stage.LEASED`)."""
        return self._lease[0] if self._lease is not None else None

    @property
    def unacked(self) -> tuple[Job, ...]:
        """The last successes, recorded in the database and still leased in Redis."""
        return tuple(self._unacked)

    @property
    def batch(self) -> tuple[str, ...]:
        """The ids leased for us after the next job, in the order they will run."""
        return self._batch

    def _expect(self, stage: Stage, move: str) -> None:
        if self._stage is not stage:
            raise IllegalMove(f"cannot {move} the next job: it is {self._stage.name}, not {stage.name}")

    # -- the next job ---------------------------------------------------------------------

    def lease(self, job_id: str, topic: str) -> None:
        """EMPTY → LEASED: ``job_id`` of ``topic`` was leased for us in Redis."""
        self._expect(Stage.EMPTY, "lease")
        self._stage, self._lease = Stage.LEASED, (job_id, topic)

    def claim(self, job: Job, execution: Execution) -> None:
        """LEASED → CLAIMED: the leased job's row was claimed for us."""
        self._expect(Stage.LEASED, "claim")
        self._stage, self._lease, self._claimed = Stage.CLAIMED, None, (job, execution)

    def take(self) -> tuple[Job, Execution]:
        """CLAIMED → EMPTY: hand the claimed job and its Execution to the loop to run."""
        self._expect(Stage.CLAIMED, "take")
        assert self._claimed is not None
        claimed, self._stage, self._claimed = self._claimed, Stage.EMPTY, None
        return claimed

    def take_lease(self) -> tuple[str, str]:
        """LEASED → EMPTY: hand over the leased ``(job id, topic)``, for the loop to claim
        (the statement that would have claimed it failed) or to acknowledge."""
        self._expect(Stage.LEASED, "take the lease of")
        assert self._lease is not None
        lease, self._stage, self._lease = self._lease, Stage.EMPTY, None
        return lease

    def lease_next(self, topic: str, slot_token: str, count: int = 1) -> str | None:
        """EMPTY → LEASED: the next job of ``topic`` (whose slot ``slot_token`` is ours),
        from the batch, else from Redis (see :meth:`next_id`).

        Returns the leased id, or ``None`` if the queue is empty or Redis is unreachable
        (the success is then recorded alone, and the loop meets the outage next).
        """
        self._expect(Stage.EMPTY, "lease")
        try:
            job_id = self.next_id(topic, slot_token, count)
        except redis.RedisError:
            return None
        if job_id is not None:
            self.lease(job_id, topic)
        return job_id

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
        held = [job for job in self._unacked if job.topic_id == topic]
        ids = engine.acks_and_pop(topic, [_ack_item(job) for job in held], count, slot_token=slot_token)
        if held:
            self._unacked = [job for job in self._unacked if job.topic_id != topic]
        if self._unacked:  # of a topic whose slot the worker no longer holds
            self.flush_acks()
        if not ids:
            return None
        self._lost.clear()
        self._batch, self._batch_topic = tuple(ids[1:]), topic
        return ids[0]

    def settle(self, next_job: NextJob) -> None:
        """After the statement that recorded a success and was offered ``next_job``:
        LEASED → CLAIMED if it claimed the leased job, else LEASED → EMPTY (a job
        claimed but not started is left to its lease; one cancelled since it was queued
        is acknowledged, see :func:`~jobqueue.transitions.recovery.give_back`). Nothing
        changes if no such statement ran."""
        if next_job.claimed is not None:
            self.claim(*next_job.claimed)
        elif next_job.id is not None:
            job_id, topic = self.take_lease()
            if not next_job.stranded:
                engine.safe_call(give_back, topic, job_id)

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
        one: the next job, the batch and the held successes (for the heartbeat to renew)."""
        held: dict[str, list[str]] = defaultdict(list)
        lease, claimed, batch, topic = self._lease, self._claimed, self._batch, self._batch_topic
        if lease is not None:
            held[lease[1]].append(lease[0])
        if claimed is not None:
            held[claimed[0].topic_id].append(str(claimed[0].pk))
        held[topic].extend(batch)
        for job in tuple(self._unacked):
            held[job.topic_id].append(str(job.pk))
        return {t: ids for t, ids in held.items() if ids}

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
        """On the way out: acknowledge the held successes, and put back the next job and
        the batch, leased or claimed for us but never run (queued again, the attempt not
        counted). What cannot be put back now is recovered from its lease."""
        self.flush_acks()
        if self._stage is Stage.CLAIMED:
            job, _execution = self.take()
            try:
                unclaim(job)
            except DatabaseError:
                logger.exception("Could not put back job %s; its lease will recover it.", job.pk,
                                 extra=job_extra(job))
        elif self._stage is Stage.LEASED:
            job_id, topic = self.take_lease()
            try:
                give_back(topic, job_id)  # still queued: back in its queue, no longer leased
            except (DatabaseError, redis.RedisError):
                logger.exception("Could not put back job %s; its lease will recover it.", job_id,
                                 extra=job_id_extra(job_id, topic))
        self.give_back_batch()


def _ack_item(job: Job) -> tuple[str, str, str]:
    """A held success as ``acks_and_pop`` takes it."""
    return str(job.pk), job.entity_id or "", success_tally(job)
