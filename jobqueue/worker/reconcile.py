"""Find jobs the database holds as queued (or due) that Redis does not, and put them back.

A job reaches Redis in a push that runs after its transaction commits. If the enqueuing
process cannot reach Redis then (a network blip, a failover) or dies between the two, the
row says ``queued`` and no worker ever pops it; Redis kept its data, so the topic's
``epoch`` check (:func:`.maintenance.ensure_redis_state`) sees nothing wrong. Every
``RECONCILE_SECONDS``, one worker per topic (whichever takes the topic's turn in Redis
first) looks at three slices of the topic's rows:

- the head: queued rows created since the previous pass, where nearly every such job is;
- the sweep: the next :data:`SWEEP_LIMIT` queued rows in queue order, from where the
  previous pass stopped, starting over at the end; it finds a job requeued or released
  during a blip, or committed long after it was created;
- due scheduled rows: only Redis promotes a scheduled job.

Rows queued (or due) less than a third of the period ago are left to the push that may
still be on its way. ``restore.lua`` puts back, atomically, only the ids Redis holds
neither queued nor leased (nor scheduled), so a job a worker took meanwhile is never
queued twice. A pass reads at most :data:`HEAD_LIMIT` + :data:`SWEEP_LIMIT` +
:data:`SCHEDULED_LIMIT` rows per topic, through indexes, however many jobs are queued,
and holds at most :data:`CHUNK` of them at a time (each chunk read, then put back).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.utils import timezone

from .. import engine
from ..conf import settings
from ..models import Job, JobStatus

logger = logging.getLogger("jobqueue.worker")

#: Queued rows created since the previous pass that one pass checks, per topic.
HEAD_LIMIT = 50_000
#: Queued rows, in queue order, that one pass checks on its way through the whole queue.
SWEEP_LIMIT = 10_000
#: Due scheduled rows one pass checks, per topic.
SCHEDULED_LIMIT = 10_000
#: Rows a pass reads and puts back at a time: the head's and the sweep's are read in chunks
#: of this many (a worker reading 50,000 rows at once kept ~25 MB more for good).
CHUNK = 5_000
#: How many periods back the head looks at most (after workers were stopped a while, say);
#: older rows are the sweep's, and a worker's start-up resync covered them.
HEAD_LOOKBACK_PERIODS = 10

#: The fields read of each queued row (its job key: a keyed job goes back behind its key's).
ROW = ("pk", "priority", "entity_id", "key")
#: (job id, priority, entity id, due time or None), as ``engine.restore`` takes them.
Item = tuple[str, int, str | None, float | None]


@dataclass
class ReconcileReport:
    """Per topic: rows looked at, and jobs put back in the queue and in the schedule."""

    checked: dict[str, int] = field(default_factory=dict)
    pushed: dict[str, int] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)


def grace_seconds() -> float:
    """How old a row must be before its push counts as missing."""
    return float(settings.RECONCILE_SECONDS) / 3


def reconcile(topics: Iterable[str], now: dt.datetime | None = None) -> ReconcileReport:
    """Check the topics whose turn this worker takes (each at most once per period)."""
    report = ReconcileReport()
    for topic in engine.reconcile_turns(topics, settings.RECONCILE_SECONDS):
        reconcile_topic(topic, now or timezone.now(), report)
    return report


def reconcile_topic(topic: str, now: dt.datetime, report: ReconcileReport) -> None:
    """One pass over ``topic``: read its three slices, put back what Redis lacks, save the positions."""
    upto = now - dt.timedelta(seconds=grace_seconds())
    saved = engine.reconcile_cursors(topic)
    floor = upto - dt.timedelta(seconds=settings.RECONCILE_SECONDS * HEAD_LOOKBACK_PERIODS)
    after = _load_head(saved.get("head"))
    head: tuple[dt.datetime, uuid.UUID | None] | None = after if after is not None and after[0] >= floor else (
        floor, None)
    sweep = _load_sweep(saved.get("sweep"))
    put = _PutBack(topic)
    left = HEAD_LIMIT
    while head is not None and left > 0:
        rows, head = _head(topic, head, upto, min(CHUNK, left))
        put.queued(rows)
        left -= len(rows)
    head_text = _dump(*head) if head is not None else _dump(upto)
    left = SWEEP_LIMIT
    while left > 0:
        rows, sweep = _sweep(topic, sweep, upto, min(CHUNK, left))
        put.queued(rows)
        left -= len(rows)
        if sweep is None:  # the end of the queue: the next pass starts over
            break
    due = Job.objects.filter(topic_id=topic, status=JobStatus.SCHEDULED, run_after__lte=upto).order_by(
        "run_after", "pk"
    )
    put.scheduled(due.values_list("pk", "priority", "entity_id", "run_after", "key")[:SCHEDULED_LIMIT])
    engine.save_reconcile_cursors(topic, {"head": head_text, "sweep": _dump(*sweep) if sweep is not None else None})

    report.checked[topic] = put.checked
    if put.pushed:
        report.pushed[topic] = put.pushed
    if put.rescheduled:
        report.scheduled[topic] = put.rescheduled
    if put.pushed or put.rescheduled:
        logger.warning(
            "Put back %s queued and %s scheduled job(s) of topic %s that Redis did not hold "
            "(their push after commit never happened).", put.pushed, put.rescheduled, topic,
        )


class _PutBack:
    """Puts back, a chunk of rows at a time, those of a topic's jobs Redis does not hold,
    counting the rows looked at and the jobs put back."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.seen: set[int] = set()  # the ids looked at (as integers: the head and the sweep may meet)
        self.checked = self.pushed = self.rescheduled = 0

    def queued(self, rows: list[Any]) -> None:
        items: list[Item] = []
        keys: dict[str, str] = {}
        for pk, priority, entity, key in rows:
            if pk.int in self.seen:  # read by the head and the sweep both
                continue
            self.seen.add(pk.int)
            items.append((str(pk), priority, entity, None))
            if key:
                keys[str(pk)] = key
        self.pushed += self._restore(items, keys)

    def scheduled(self, rows: Iterable[Any]) -> None:
        items: list[Item] = []
        keys: dict[str, str] = {}
        for pk, priority, entity, run_after, key in rows:
            items.append((str(pk), priority, entity, run_after.timestamp()))
            if key:
                keys[str(pk)] = key
        self.rescheduled += self._restore(items, keys)

    def _restore(self, items: list[Item], keys: dict[str, str]) -> int:
        self.checked += len(items)
        return len(set(engine.restore(self.topic, items, keys))) if items else 0


def _head(topic: str, after: tuple[dt.datetime, uuid.UUID | None], upto: dt.datetime, limit: int,
          ) -> tuple[list[Any], tuple[dt.datetime, uuid.UUID] | None]:
    """Up to ``limit`` queued rows created after ``after`` (a time, and an id for ties) up to
    ``upto``, and the position after them if more may follow (``None``: none do)."""
    at, pk = after
    newer = Q(created_at__gt=at) | Q(created_at=at, pk__gt=pk) if pk is not None else Q(created_at__gt=at)
    rows = list(
        # created_at >= at, implied by `newer`, lets the index scan start there.
        Job.objects.filter(newer, topic_id=topic, status=JobStatus.QUEUED, created_at__gte=at, created_at__lte=upto)
        .order_by("created_at", "pk")
        .values_list(*ROW)[:limit]
    )
    last = _last_time(rows, limit, "created_at")
    return rows, (last, rows[-1][0]) if last is not None else None


def _sweep(topic: str, after: tuple[int, dt.datetime, uuid.UUID] | None, upto: dt.datetime, limit: int,
           ) -> tuple[list[Any], tuple[int, dt.datetime, uuid.UUID] | None]:
    """The next ``limit`` queued rows at most in queue order (priority, then time queued) after
    ``after``, a ``(priority, queued_at, id)`` position; ``None`` as the next position at the end."""
    # Every way into "queued" sets queued_at: rows without one are not the package's.
    queued = Job.objects.filter(topic_id=topic, status=JobStatus.QUEUED, queued_at__lte=upto)
    rows: list[Any] = []
    if after is not None:
        priority, at, pk = after
        # Two range scans of the queued-jobs index: the rest of this priority (from the position:
        # queued_at >= at is implied, and starts the scan there), then the lower priorities.
        same = queued.filter(Q(queued_at__gt=at) | Q(queued_at=at, pk__gt=pk), priority=priority, queued_at__gte=at)
        rows = list(same.order_by("queued_at", "pk").values_list(*ROW)[:limit])
        queued = queued.filter(priority__lt=priority)
    if len(rows) < limit:
        rest = queued.order_by("-priority", "queued_at", "pk").values_list(*ROW)
        rows += list(rest[: limit - len(rows)])
    last = _last_time(rows, limit, "queued_at")
    return rows, (rows[-1][1], last, rows[-1][0]) if last is not None else None


def _last_time(rows: list[Any], limit: int, name: str) -> dt.datetime | None:
    """The time field ``name`` of the last row if the slice is full (more rows may follow).

    Read on its own: turning a timestamp into a datetime for every row would cost more
    than the query. ``None`` if the slice is not full (or the row is gone)."""
    if len(rows) < limit:
        return None
    return Job.objects.filter(pk=rows[-1][0]).values_list(name, flat=True).first()


def _dump(*parts: Any) -> str:
    return " ".join(part.isoformat() if isinstance(part, dt.datetime) else str(part) for part in parts)


def _load_head(text: str | None) -> tuple[dt.datetime, uuid.UUID | None] | None:
    """A stored head position, ``time [id]``."""
    parts = (text or "").split(" ")
    try:
        if len(parts) in (1, 2) and parts[0]:
            return dt.datetime.fromisoformat(parts[0]), uuid.UUID(parts[1]) if len(parts) == 2 else None
    except ValueError:
        pass
    _unreadable(text)
    return None


def _load_sweep(text: str | None) -> tuple[int, dt.datetime, uuid.UUID] | None:
    """A stored sweep position, ``priority time id``."""
    parts = (text or "").split(" ")
    try:
        if len(parts) == 3:
            return int(parts[0]), dt.datetime.fromisoformat(parts[1]), uuid.UUID(parts[2])
    except ValueError:
        pass
    _unreadable(text)
    return None


def _unreadable(text: str | None) -> None:
    if text:
        logger.warning("Ignoring an unreadable reconciliation position %r; starting over.", text)
