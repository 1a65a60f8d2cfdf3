"""Work every worker does between jobs, about once a second: promote due scheduled
jobs, recover jobs whose lease expired, rebuild Redis if it lost its data, put back
jobs whose push never reached it (:mod:`.reconcile`, one worker per topic and period),
and run registered hooks (cron). Every step is atomic in Lua or guarded in SQL, so many
workers doing it at once is safe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .. import cron, engine
from ..conf import settings
from ..models import FINISHED_STATUSES, Job, JobStatus
from ..resync import resync, roll_up
from ..transitions import recovery
from ..transitions.followups import release_dependents
from .reconcile import reconcile as reconcile  # one of the steps, kept in its own module

logger = logging.getLogger("jobqueue.worker")

#: Callables run with the worker on every maintenance pass; the cron scheduler is the first.
HOOKS: list[Callable[[Any], None]] = [cron.run_scheduler]


def promote(topics: Iterable[str]) -> int:
    """Queue scheduled jobs that are due; returns how many were promoted."""
    return sum(recovery.promote(topic) for topic in topics)


def repair_key_queues(topics: Iterable[str]) -> int:
    """Give each key whose queued job left by a path that knows no keys its next job
    (see ``flow_repair.lua``); returns the jobs moved."""
    return sum(engine.flow.repair(topic) for topic in topics)


def reap(topics: Iterable[str]) -> int:
    """Recover jobs whose lease expired; returns how many were handled."""
    total = 0
    for topic in topics:
        for job_id in engine.claim_expired(topic, grace_seconds=settings.LEASE_SECONDS):
            recovery.recover(topic, job_id)
            total += 1
    return total


def sweep_waiting(limit: int = 100) -> int:
    """Release jobs still waiting on dependencies that already finished.

    The finishing worker releases dependents itself; this catches a dependent
    added while its dependency was finishing.
    """
    done = (
        Job.objects.filter(has_dependents=True, status__in=FINISHED_STATUSES, dependents__status=JobStatus.WAITING)
        .distinct()[:limit]
    )
    count = 0
    for job in done:
        release_dependents(job)
        count += 1
    return count


def ensure_redis_state(topics: Iterable[str], force: bool = False) -> bool:
    """Rebuild, from the database, the topics whose Redis data may have lost writes
    (every one of ``topics`` with ``force``).

    Each topic is checked on its own (:func:`jobqueue.engine.stale_topics`): its ``epoch``
    key, in the topic's slot, names the Redis server it was rebuilt on; a flush, a restart
    or a failover (a replica promoted without the master's last writes) shows as a missing
    or different epoch, for the topics of that server or shard only. Returns whether a
    resync ran.
    """
    names = list(topics)
    lost = names if force else engine.stale_topics(names)
    if not lost:
        return False
    epochs = engine.server_epochs(lost)  # before the resync: a failover meanwhile is seen next time
    report = resync(lost)
    engine.stamp_epochs(epochs)
    counts = (report.pushed, report.scheduled, report.dropped, report.leases)
    if force:
        if report.total():
            logger.warning("Resynced Redis with the database for %s: pushed %s, scheduled %s, dropped %s, "
                           "leases %s", ", ".join(lost), *counts)
    else:
        logger.warning("Rebuilt Redis from the database for %s (its data was lost, or came from another server): "
                       "pushed %s, scheduled %s, dropped %s, leases %s", ", ".join(lost), *counts)
    return True


def roll_up_metrics(period: float) -> bool:
    """Add the rows that finished since the metrics tally's watermark to the tally, a
    bounded number at a time (see :func:`jobqueue.resync.roll_up`), so that rebuilding a
    lost metrics hash reads only recent rows; returns whether more is left to add.

    One worker takes the turn for ``period`` seconds (the others do nothing meanwhile);
    while more is left, it gives the turn back at once for the next pass of any worker."""
    r = engine.get_redis()
    if not r.set(engine.rollup_key(), "1", nx=True, px=max(1, int(period * 1000))):
        return False
    more = roll_up()
    if more:
        r.delete(engine.rollup_key())
    return more


def run_hooks(worker: Any) -> None:
    for hook in HOOKS:
        try:
            hook(worker)
        except Exception:
            logger.exception("Maintenance hook %r failed", hook)
