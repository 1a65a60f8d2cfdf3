"""The worker's read-ahead: its next job, leased (and maybe claimed) while the last one's
success is recorded, and that success's Redis acknowledgement, held back to ride on the
next pop.

A worker holding one topic slot calls Redis once per job, not twice: while it records
a success it leases the next job id, acknowledging the success before it in the same
call (``ack_and_pop``). On PostgreSQL the statement recording the success also claims
that job (:class:`~jobqueue.transitions.attempt.NextJob`): one statement, not two.

The next job goes through explicit stages (:class:`Stage`)::

    EMPTY ──lease──▶ LEASED ──claim──▶ CLAIMED ──take──▶ EMPTY (the loop runs it)
                     LEASED ──take_lease──▶ EMPTY (the loop claims it, or acknowledges it)

and :meth:`ReadAhead.give_back` returns whatever is held when the worker stops. A move
from a stage that does not allow it raises :class:`IllegalMove`. The held
acknowledgement is independent of the stage: the last success is held while the next
job is leased or claimed.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

import redis
from django.db import DatabaseError

from .. import engine
from ..logging import job_extra, job_id_extra
from .lifecycle import NextJob, recover, success_tally, unclaim

if TYPE_CHECKING:
    from ..models import Execution, Job

logger = logging.getLogger("jobqueue.worker")


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
    """The next job of one worker, and the success whose acknowledgement waits for it."""

    def __init__(self) -> None:
        self._stage = Stage.EMPTY
        self._lease: tuple[str, str] | None = None  # (job id, topic) while LEASED
        self._claimed: tuple[Job, Execution] | None = None  # while CLAIMED
        self._unacked: Job | None = None

    def __repr__(self) -> str:
        unacked = self._unacked.pk if self._unacked is not None else None
        return f"<ReadAhead {self._stage.name} unacked={unacked}>"

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def leased_id(self) -> str | None:
        """The id of the leased next job (``None`` unless :attr:`Stage.LEASED`)."""
        return self._lease[0] if self._lease is not None else None

    @property
    def unacked(self) -> Job | None:
        """The last success, recorded in the database and still leased in Redis."""
        return self._unacked

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

    def lease_next(self, topic: str, slot_token: str) -> str | None:
        """EMPTY → LEASED: lease the next job of ``topic`` (whose slot ``slot_token`` is
        ours), acknowledging the held success in the same call if it is of that topic.

        Returns the leased id, or ``None`` if the queue is empty or Redis is unreachable
        (the success is then recorded alone, and the loop meets the outage next).
        """
        self._expect(Stage.EMPTY, "lease")
        held = self._unacked
        try:
            if held is not None and held.topic_id == topic:
                ids = engine.ack_and_pop(topic, str(held.pk), held.entity_id, 1, slot_token=slot_token,
                                         tally=success_tally(held))
                self._unacked = None
            else:
                ids = engine.pop(topic, 1, slot_token=slot_token)
        except redis.RedisError:
            return None
        if not ids:
            return None
        self.lease(ids[0], topic)
        return ids[0]

    def settle(self, next_job: NextJob) -> None:
        """After the statement that recorded a success and was offered ``next_job``:
        LEASED → CLAIMED if it claimed the leased job, else LEASED → EMPTY (a job
        claimed but not started is left to its lease; one cancelled since it was queued
        is acknowledged). Nothing changes if no such statement ran."""
        if next_job.claimed is not None:
            self.claim(*next_job.claimed)
        elif next_job.id is not None:
            job_id, topic = self.take_lease()
            if not next_job.stranded:
                engine.safe_call(engine.ack, topic, job_id)

    # -- the held acknowledgement ---------------------------------------------------------

    def hold_ack(self, job: Job) -> None:
        """Hold back the acknowledgement of ``job``'s success until the next pop; a success
        held before it, that no pop took, is acknowledged alone now."""
        earlier, self._unacked = self._unacked, job
        if earlier is not None:
            engine.safe_call(engine.ack, earlier.topic_id, str(earlier.pk), earlier.entity_id, success_tally(earlier))

    def take_ack(self) -> Job | None:
        """Hand over the held success (``None`` if there is none) for the caller to
        acknowledge, alone or with its next pop; it is no longer held."""
        held, self._unacked = self._unacked, None
        return held

    # -- stopping -------------------------------------------------------------------------

    def give_back(self) -> None:
        """On the way out: acknowledge the held success, and put back a next job leased or
        claimed for us but never run (queued again, the attempt not counted). What cannot
        be put back now is recovered from its lease."""
        held = self.take_ack()
        if held is not None:
            engine.safe_call(engine.ack, held.topic_id, str(held.pk), held.entity_id, success_tally(held))
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
                recover(topic, job_id)  # still queued: back in its queue, no longer leased
            except (DatabaseError, redis.RedisError):
                logger.exception("Could not put back job %s; its lease will recover it.", job_id,
                                 extra=job_id_extra(job_id, topic))
