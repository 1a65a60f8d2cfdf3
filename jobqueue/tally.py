"""The metrics tally's watermark lock, and the finished jobs a requeue or a delete takes off it.

The tally (:class:`~jobqueue.models.MetricsTally`, see :mod:`jobqueue.resync`) counts the
finished jobs by status (``jobs:failed``) up to its watermark. A job counted there that is
requeued or deleted is no longer a failed job: :func:`untally` takes it off, in the
transaction that changes or deletes its row, so the counts of ``GET /stats`` and the admin
stay the rows the table holds. The executions, the waits and ``enqueued`` stay: they are
history, as the live counters are.

Both sides hold the watermark row's lock (:func:`lock_watermark`) from before they read the
jobs until they commit, so a roll-up never counts a row that a requeue or a delete already
left uncounted, nor misses one it took off: whichever comes second sees what the first did.
"""

from __future__ import annotations

from typing import Any

from django.db import router, transaction
from django.db.models import Count, QuerySet
from django.db.transaction import TransactionManagementError

from .models import FINISHED_STATUSES, MetricsTally

#: The prefix of the tally fields that count finished jobs by status (``jobs:failed``), not metrics.
JOBS_FIELD = "jobs:"


def lock_watermark(using: str) -> MetricsTally:
    """The row that holds the watermark (made if missing), locked until the transaction ends.

    PostgreSQL locks the row (``SELECT ... FOR UPDATE``); SQLite has no row locks, so its
    write lock is taken before anything is read (two transactions that both read first
    cannot both upgrade to writing). Every writer of the tally takes this lock first.
    """
    conn = transaction.get_connection(using)
    if not conn.in_atomic_block:
        raise TransactionManagementError("The tally's watermark is locked inside a transaction.")
    if conn.vendor == "sqlite":
        with conn.cursor() as cursor:
            cursor.execute(f"UPDATE {conn.ops.quote_name(MetricsTally._meta.db_table)} SET until = until WHERE 0")
    head = MetricsTally.objects.using(using).filter(topic="")
    if conn.features.has_select_for_update:
        head = head.select_for_update()
    row = head.first()
    if row is None:
        # Before the first roll-up: made here, so a roll-up that starts meanwhile waits.
        MetricsTally.objects.using(using).get_or_create(topic="")
        row = head.get()
    return row


def untally(jobs: QuerySet[Any]) -> None:
    """Take the jobs of ``jobs`` that the tally counts as finished off it: call it in the
    transaction that requeues or deletes them, before it does.

    One aggregate over ``jobs`` (by topic and status, the finished ones before the watermark)
    and, if it finds any, one read and one write of their topics' tally rows.
    """
    using = writing_db(jobs)
    watermark = lock_watermark(using).until
    if watermark is None:
        return  # nothing rolled up yet: every row is counted live
    jobs = jobs.all()
    jobs.query.select_for_update = False  # a GROUP BY cannot lock rows (on PostgreSQL)
    counted = (
        jobs.filter(status__in=FINISHED_STATUSES, finished_at__lt=watermark)
        .order_by()
        .values_list("topic_id", "status")
        .annotate(n=Count("pk"))
    )
    gone: dict[str, dict[str, int]] = {}
    for topic, status, n in counted:
        gone.setdefault(topic, {})[JOBS_FIELD + status] = n
    if not gone:
        return
    rows = list(MetricsTally.objects.using(using).filter(topic__in=list(gone)))
    for row in rows:
        for name, n in gone[row.topic].items():
            row.counts[name] = int(row.counts.get(name, 0)) - n
    MetricsTally.objects.using(using).bulk_update(rows, ["counts"])


def writing_db(jobs: QuerySet[Any]) -> str:
    """The database a change of ``jobs`` writes to (as ``QuerySet.delete()`` finds it)."""
    return getattr(jobs, "_db", None) or router.db_for_write(jobs.model, **getattr(jobs, "_hints", {}))


__all__ = ["JOBS_FIELD", "lock_watermark", "untally", "writing_db"]
