"""The bridge's loop: consume Celery messages with kombu, write jobs, acknowledge after commit.

Messages are read in batches: each batch's new jobs are inserted in one transaction
(:func:`jobqueue.transitions.create.insert_new`, which skips ids a job already
holds), and only once that transaction has committed are the batch's messages
acknowledged. A bridge killed at any moment therefore loses nothing (the broker
delivers its unacknowledged messages again) and duplicates nothing (a message
delivered again finds its job by the task id and is only acknowledged).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from django.db import DatabaseError, close_old_connections, router, transaction
from kombu import Connection, Consumer, Exchange, Queue
from kombu.exceptions import OperationalError

from jobqueue import engine
from jobqueue.conf import settings
from jobqueue.exceptions import InvalidJob
from jobqueue.models import Job
from jobqueue.transitions import create

from .protocol import JobRequest, Refusal, parse
from .redis_source import RedisSource

logger = logging.getLogger("jobqueue.celery")

#: Messages written in one transaction, at most.
BATCH_SIZE = 500
#: Seconds a partly filled batch waits for its next message before it is written.
BATCH_SECONDS = 0.05
#: A batch still filling is written once this many BATCH_SECONDS old.
BATCH_AGE_FACTOR = 10
#: Seconds an idle bridge waits for a message; ``burst`` mode exits after one such wait.
BURST_IDLE_SECONDS = 1.0
#: Seconds between two looks into an empty Redis queue: the first, and at most (doubling).
IDLE_POLL_SECONDS = (0.005, 0.1)
#: Seconds between two attempts to write a batch while the database is unreachable (doubling).
RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0


def counters_key() -> str:
    """The Redis hash of the bridge's counters (``created``, ``duplicate``, ``refused:<reason>``)."""
    return f"{settings.PREFIX}:celery-bridge"


@dataclasses.dataclass
class Tally:
    """What a bridge did: jobs created, messages that found their job, refusals by reason."""

    created: int = 0
    duplicate: int = 0
    refused: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def summary(self) -> str:
        refused = ", ".join(f"{reason} {n}" for reason, n in sorted(self.refused.items())) or "none"
        return f"{self.created} jobs created, {self.duplicate} already there, refused: {refused}"


@dataclasses.dataclass
class BridgeOptions:
    """How the bridge consumes: see ``manage.py jobbridge celery --help``."""

    batch_size: int = BATCH_SIZE
    batch_seconds: float = BATCH_SECONDS
    prefetch: int | None = None  # default: twice the batch
    declare: bool = True
    max_priority: int | None = None  # x-max-priority of the queues it declares (RabbitMQ)
    visibility_timeout: float | None = None  # Redis transport: seconds before unacked messages return
    burst: bool = False  # stop once the queues stay empty for BURST_IDLE_SECONDS


class CeleryBridge:
    """Turns the messages of ``queues`` on the broker at ``url`` into jobs.

    ``tasks`` maps Celery task names to topics. :meth:`run` consumes until
    :meth:`stop` is called (from a signal handler, say) or, in burst mode, until the
    queues are empty; it returns the :class:`Tally`.
    """

    def __init__(self, url: str, queues: list[str], tasks: Mapping[str, str],
                 options: BridgeOptions | None = None):
        self.url = url
        self.queue_names = queues
        self.tasks = dict(tasks)
        self.options = options or BridgeOptions()
        self.tally = Tally()
        self._pending: list[tuple[JobRequest, Any]] = []
        self._first_at = 0.0
        self._counts: collections.Counter[str] = collections.Counter()
        self._stopping = False
        self._transport = "amqp"
        self._source: Any = None  # the RedisSource of the Redis transport

    def stop(self) -> None:
        """Finish the batch in hand (write it, acknowledge it) and return from :meth:`run`."""
        self._stopping = True

    # -- consuming ----------------------------------------------------------------------

    def connection(self) -> Connection:
        options: dict[str, Any] = {}
        if self.options.visibility_timeout is not None:
            options["visibility_timeout"] = self.options.visibility_timeout
        return Connection(self.url, transport_options=options)

    def queues(self) -> list[Queue]:
        arguments = {"x-max-priority": self.options.max_priority} if self.options.max_priority else None
        return [Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments,
                      no_declare=not self.options.declare) for name in self.queue_names]

    def run(self) -> Tally:
        """Consume until stopped; a lost broker connection is reopened (its unacknowledged
        messages come back from the broker, so nothing in hand is kept)."""
        delay = RETRY_SECONDS
        while not self._stopping:
            with self.connection() as conn:
                try:
                    conn.ensure_connection(max_retries=1)
                    self._transport = conn.transport.driver_type
                    consume = self._consume_redis if self._transport == "redis" else self._consume_kombu
                    consume(conn)
                    break
                except (OperationalError, *conn.recoverable_connection_errors,
                        *conn.recoverable_channel_errors) as exc:
                    logger.warning("Lost the broker at %s (%s); reconnecting in %.1f s.",
                                   conn.as_uri(), exc, delay)
                    self._pending = []  # their channel is gone: the broker delivers them again
            self._sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)
        self._save_counts()
        return self.tally

    def _consume_kombu(self, conn: Connection) -> None:
        """Consume with a kombu consumer (RabbitMQ) until stopped (or, in burst mode, until the
        queues are empty)."""
        channel = conn.channel()
        prefetch = self.options.prefetch or 2 * self.options.batch_size
        consumer = Consumer(channel, queues=self.queues(), accept=["json"], on_message=self._received,
                            prefetch_count=prefetch)
        with consumer:
            while not self._stopping:
                # A partial batch waits batch_seconds for its next message, and is written at
                # the latest when it is BATCH_AGE_FACTOR times that old.
                wait = self.options.batch_seconds if self._pending else BURST_IDLE_SECONDS
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:  # socket.timeout: nothing arrived in time
                    if self._pending:
                        self.flush()
                        continue
                    if self.options.burst:
                        return
                    close_old_connections()  # idle: drop a database connection past its age
                    continue
                if len(self._pending) >= self.options.batch_size or (self._pending and time.monotonic()
                                                                     - self._first_at >= self._max_age()):
                    self.flush()
            self.flush()

    def _consume_redis(self, conn: Connection) -> None:
        """Consume from Celery's Redis broker with :class:`RedisSource` (taking a message records
        it as unacknowledged in the same step) until stopped, or empty in burst mode."""
        self._source = source = RedisSource(conn, self.queues(), declare=self.options.declare)
        source.restore_visible(force=True)  # what a killed bridge held, once past the visibility timeout
        idle_since = time.monotonic()
        pause = IDLE_POLL_SECONDS[0]
        while not self._stopping:
            taken = source.take(self.options.batch_size - len(self._pending))
            for message in taken:
                self._received(message)
            if self._pending and (not taken or len(self._pending) >= self.options.batch_size
                                  or time.monotonic() - self._first_at >= self._max_age()):
                self.flush()
            if taken:
                idle_since, pause = time.monotonic(), IDLE_POLL_SECONDS[0]
                continue
            if self.options.burst and time.monotonic() - idle_since >= BURST_IDLE_SECONDS:
                return
            self._sleep(pause, step=pause)
            pause = min(pause * 2, IDLE_POLL_SECONDS[1])
            source.restore_visible()
        self.flush()

    def _max_age(self) -> float:
        return self.options.batch_seconds * BATCH_AGE_FACTOR

    def _received(self, message: Any) -> None:
        if message.errors:  # kombu could not decompress the body
            self._refuse(message, Refusal("malformed", f"kombu could not read the message: {message.errors[0]!r}"))
            return
        properties = message.properties or {}
        priority = properties.get("priority", (message.delivery_info or {}).get("priority"))
        outcome = parse(
            content_type=message.content_type, content_encoding=message.content_encoding,
            headers=message.headers, body=message.body, priority=priority, transport=self._transport,
            tasks=self.tasks, now=dt.datetime.now(dt.timezone.utc),
        )
        if isinstance(outcome, Refusal):
            self._refuse(message, outcome)
            return
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append((outcome, message))

    def _refuse(self, message: Any, refusal: Refusal) -> None:
        """Reject without requeueing (a RabbitMQ queue's dead-letter exchange gets it), log, count."""
        logger.warning("Refused a Celery message (%s): %s; task %s, id %s.", refusal.reason, refusal.detail,
                       refusal.task or "?", refusal.task_id or "?")
        message.reject(requeue=False)
        self.tally.refused[refusal.reason] += 1
        self._counts[f"refused:{refusal.reason}"] += 1

    # -- writing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the pending messages' jobs in one transaction, then acknowledge them."""
        batch, self._pending = self._pending, []
        built = self._retrying(lambda: self._build(batch)) if batch else None
        if built is None:  # nothing pending, or stopped while the database was down
            return
        jobs, kept, refusals = built
        for message, refusal in refusals:
            self._refuse(message, refusal)
        outcomes = self._retrying(lambda: self._insert(jobs)) if jobs else None
        if outcomes is None:  # the broker delivers them again
            return
        acked = []
        for (request, message), job, existing in zip(kept, jobs, outcomes, strict=True):
            if existing is None:
                self.tally.created += 1
                self._counts["created"] += 1
            elif existing.topic_id != job.topic_id:
                self._refuse(message, Refusal("id-conflict", f"job {existing.pk} is of topic "
                                              f"{existing.topic_id!r}", request.task_id, request.task))
                continue
            else:
                self.tally.duplicate += 1
                self._counts["duplicate"] += 1
            acked.append(message)
        self._ack(acked)
        self._save_counts()

    def _build(self, batch: list[tuple[JobRequest, Any]]) -> tuple[list[Job], list[Any], list[Any]]:
        """The batch's unsaved jobs, the messages they came from, and the refusals of the others."""
        jobs, kept, refusals = [], [], []
        for request, message in batch:
            try:
                job, _ = Job.objects.build(request.topic, request.payload, priority=request.priority,
                                           run_after=request.run_after, job_id=request.job_id)
            except InvalidJob as exc:
                refusals.append((message, Refusal("invalid", str(exc), request.task_id, request.task)))
                continue
            jobs.append(job)
            kept.append((request, message))
        return jobs, kept, refusals

    def _insert(self, jobs: list[Job]) -> list[Job | None]:
        db = router.db_for_write(Job)
        with transaction.atomic(using=db):
            outcomes = create.insert_new(jobs, db)
            create.created([job for job, found in zip(jobs, outcomes, strict=True) if found is None], db)
        return outcomes

    def _retrying(self, step: Callable[[], Any]) -> Any:
        """``step()``, again while the database is unreachable (``None`` if stopped meanwhile)."""
        delay = RETRY_SECONDS
        while True:
            try:
                return step()
            except DatabaseError as exc:
                logger.warning("Could not write jobs from Celery messages (%s); retrying in %.1f s.", exc, delay)
                close_old_connections()
                if self._stopping:
                    return None
                self._sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    def _ack(self, messages: list[Any]) -> None:
        if not messages:
            return
        if self._transport == "redis":
            self._source.settle(messages)  # one round trip for the batch
        elif self._transport == "amqp":
            # Delivery tags grow on a channel and every earlier message is settled or in
            # this batch: one basic.ack covers them all.
            messages[-1].ack(multiple=True)
        else:
            for message in messages:
                message.ack()

    def _save_counts(self) -> None:
        if not self._counts:
            return
        counts, self._counts = self._counts, collections.Counter()
        try:
            pipe = engine.get_redis().pipeline(transaction=False)
            for field, n in counts.items():
                pipe.hincrby(counters_key(), field, n)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Could not count the bridge's messages in Redis (%s).", exc)

    def _sleep(self, seconds: float, step: float = 0.1) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(step)


def stored_counts() -> dict[str, int]:
    """The counters every bridge of this installation added up in Redis."""
    raw = engine.get_redis().hgetall(counters_key())
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
