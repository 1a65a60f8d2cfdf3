"""What one reconciliation pass costs with a million queued jobs on PostgreSQL.

    python bench/reconcile.py                        # fill (once), push every job to Redis, time passes
    python bench/reconcile.py --jobs 200000 --recent 10000 --missing 500

A pass (``jobqueue.worker.reconcile``) reads three capped slices of a topic's rows and
checks them against Redis. The script times passes over a topic of ``--jobs`` queued
jobs, every one in Redis, and over a second topic with ``--recent`` jobs enqueued in the
last period (an enqueue rate of about 1,800 jobs/s for 15 s), first all pushed, then with
``--missing`` of them never pushed; then it walks the whole first topic, a sweep slice a
pass, with ``--missing`` old jobs missing too, and times a full ``resync()`` for scale.

The database is its own (``jobqueue_bench_reconcile`` unless ``--db`` says otherwise),
created if missing and filled like ``bench/admin_changelist.py``'s (a reused filled
database skips that); the Redis of ``JOBQUEUE_BENCH_REDIS_URL``
(``redis://127.0.0.1:6379/13``) is flushed. Results are printed as Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.admin_changelist import configure, create_database, fill  # noqa: E402

BACKLOG = "backlog"
RECENT = "recent"


def queued(topic: str) -> int:
    from jobqueue.models import Job

    return Job.objects.filter(topic_id=topic, status="queued").count()


def one_pass(topic: str, now: dt.datetime) -> dict[str, Any]:
    """One pass over ``topic`` (its turn freed first), with its SQL and wall times."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from jobqueue import engine
    from jobqueue.worker import reconcile

    engine.get_redis().delete(engine.topic_keys(topic).reconcile_turn)
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        report = reconcile.reconcile([topic], now=now)
        wall = (time.perf_counter() - start) * 1000
    return {
        "wall": wall,
        "db": sum(float(q["time"]) for q in queries.captured_queries) * 1000,
        "queries": len(queries.captured_queries),
        "checked": report.checked.get(topic, 0),
        "pushed": report.pushed.get(topic, 0),
    }


def timed_passes(topic: str, now: dt.datetime, passes: int) -> dict[str, Any]:
    """The median of ``passes`` passes, each from the same starting positions (kept for the next)."""
    from jobqueue import engine

    saved = engine.reconcile_cursors(topic)
    positions = {"head": saved.get("head"), "sweep": saved.get("sweep")}
    runs = []
    for _ in range(passes):
        engine.save_reconcile_cursors(topic, positions)
        runs.append(one_pass(topic, now))
    engine.save_reconcile_cursors(topic, positions)
    middle = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
    return dict(middle, min=min(r["wall"] for r in runs), max=max(r["wall"] for r in runs))


def forget(topic: str, ids: list[Any]) -> None:
    """Take ``ids`` out of Redis, as if their push had never happened."""
    from jobqueue import engine

    with engine.get_redis().pipeline(transaction=False) as pipe:
        for pk in ids:
            engine.remove(topic, str(pk), client=pipe)
        pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("JOBQUEUE_BENCH_RECONCILE_DB", "jobqueue_bench_reconcile"))
    parser.add_argument("--jobs", type=int, default=1_000_000, help="Queued jobs of the backlog topic.")
    parser.add_argument("--recent", type=int, default=27_000, help="Jobs enqueued in the last period.")
    parser.add_argument("--missing", type=int, default=1_000, help="Jobs whose push never happened.")
    parser.add_argument("--passes", type=int, default=7, help="Timed passes per case (default 7).")
    args = parser.parse_args()

    create_database(args.db)
    configure(args.db)
    from django import get_version
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from jobqueue import engine
    from jobqueue.conf import settings
    from jobqueue.models import Job
    from jobqueue.resync import resync
    from jobqueue.worker import reconcile

    call_command("migrate", verbosity=0)
    if queued(BACKLOG) != args.jobs:
        print(f"filling {args.jobs:,} queued jobs", file=sys.stderr)
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE jobqueue_job, jobqueue_execution, jobqueue_job_depends_on")
        fill(args.jobs, [BACKLOG], status_sql="'queued'", span_days=30)
    Job.objects.filter(topic_id=RECENT).delete()
    period = settings.RECONCILE_SECONDS
    fill(args.recent, [RECENT], status_sql="'queued'", span_days=period / 86400)  # the last period
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobqueue_job")
    now = timezone.now() + dt.timedelta(seconds=reconcile.grace_seconds())  # the recent jobs are past the grace

    engine.get_redis().flushdb()
    start = time.perf_counter()
    resync([BACKLOG, RECENT])
    resync_s = time.perf_counter() - start
    rows = []
    rows.append((f"{args.jobs:,} queued, all in Redis", timed_passes(BACKLOG, now, args.passes)))
    rows.append((f"{args.recent:,} enqueued in the last {period} s, all in Redis",
                 timed_passes(RECENT, now, args.passes)))
    recent_ids = list(Job.objects.filter(topic_id=RECENT).order_by("?").values_list("pk", flat=True)[: args.missing])
    forget(RECENT, recent_ids)
    rows.append((f"the same, {len(recent_ids):,} of them never pushed", one_pass(RECENT, now)))

    old_ids = list(Job.objects.filter(topic_id=BACKLOG).order_by("?").values_list("pk", flat=True)[: args.missing])
    forget(BACKLOG, old_ids)
    engine.save_reconcile_cursors(BACKLOG, {"sweep": None})
    sweep = []
    while True:
        sweep.append(one_pass(BACKLOG, now))
        if "sweep" not in engine.reconcile_cursors(BACKLOG):
            break
    found = sum(p["pushed"] for p in sweep)

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    info = engine.get_redis().info("server")
    print(f"## One reconciliation pass, PostgreSQL {pg_version}, Redis {info['redis_version']}\n")
    print(f"Django {get_version()}, Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s); "
          f"HEAD_LIMIT {reconcile.HEAD_LIMIT:,}, SWEEP_LIMIT {reconcile.SWEEP_LIMIT:,}, "
          f"SCHEDULED_LIMIT {reconcile.SCHEDULED_LIMIT:,}. Median of {args.passes} passes where several ran.\n")
    print("| topic | pass ms (min-max) | SQL statements | DB ms | rows checked | put back |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, r in rows:
        spread = f" ({r['min']:.0f}-{r['max']:.0f})" if "min" in r else ""
        print(f"| {label} | {r['wall']:.0f}{spread} | {r['queries']} | {r['db']:.0f} | {r['checked']:,} | "
              f"{r['pushed']:,} |")
    walls = [p["wall"] for p in sweep]
    print(f"\nThe sweep went through all {args.jobs:,} queued jobs of the first topic in {len(sweep)} passes "
          f"({statistics.median(walls):.0f} ms median, {max(walls):.0f} ms at most; "
          f"{len(sweep) * period / 60:.0f} min at RECONCILE_SECONDS = {period}) and put back "
          f"{found:,} of the {len(old_ids):,} old jobs taken out of Redis.")
    print(f"A full resync() of both topics (what a worker does at start) took {resync_s:.1f} s.")


if __name__ == "__main__":
    main()
