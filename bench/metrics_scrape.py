"""What one Prometheus scrape costs with 100 topics and a million jobs on PostgreSQL.

    python bench/metrics_scrape.py                   # fill (once), rebuild Redis, time scrapes
    python bench/metrics_scrape.py --topics 20 --jobs 100000 --requests 50

The script uses its own database (``jobqueue_bench_metrics`` unless ``--db`` says
otherwise), created if missing and filled like ``bench/admin_changelist.py``'s, with
waiting jobs too and one Execution row per started job (a filled database is reused).
The Redis of ``JOBQUEUE_BENCH_REDIS_URL`` (``redis://127.0.0.1:6379/13``) is flushed,
then rebuilt by ``resync()`` as a worker would after a flush: queues, schedules and each
topic's metrics counted from the tables (that rebuild is timed too). Twenty workers are
registered as live. Scrapes go through Django's test client with an API token, so the
time measured is the server's: authentication, the collector's Redis pipeline and SQL,
and the text encoding. Results are printed as Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import admin_changelist  # noqa: E402

#: Statuses of the generated jobs, as (status, share in percent).
STATUS_MIX = [
    ("succeeded", 80),
    ("failed", 7),
    ("queued", 7),
    ("running", 2),
    ("scheduled", 1),
    ("waiting", 1),
    ("cancelled", 2),
]
#: The scrape must answer within this many milliseconds (median of the timed requests).
TARGET_MS = 50
URL = "/metrics"


def status_sql() -> str:
    parts, upper = [], 0
    for status, share in STATUS_MIX:
        upper += share
        parts.append(f"WHEN mod(i, 100) < {upper} THEN '{status}'")
    return "CASE " + " ".join(parts) + " END"


def fill(total: int, topics: list[str]) -> None:
    """The jobs (spread over ``topics``), then an Execution row for every job that started."""
    from django.db import connection

    admin_changelist.fill(total, topics, status_sql=status_sql())
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO jobqueue_execution (job_id, attempt, worker_id, hostname, pid, started_at, finished_at,
                                            outcome, exit_code, stdout, stderr, error, traceback, duration)
            SELECT id, 1, worker_id, 'bench', 1, started_at, finished_at,
                   CASE status WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed'
                               WHEN 'cancelled' THEN 'cancelled' ELSE 'running' END,
                   NULL, '', '', error, '', EXTRACT(EPOCH FROM finished_at - started_at)
            FROM jobqueue_job WHERE started_at IS NOT NULL
        """)
        cursor.execute("VACUUM ANALYZE jobqueue_execution")


def register_workers(count: int, topics: list[str]) -> None:
    from jobqueue import engine

    for n in range(count):
        engine.beat(f"bench-{n}", {"host": "bench", "pid": n, "topics": topics[n::count]})


def timed_scrapes(client: Any, key: str, requests: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    response = client.get(URL, **headers)  # warm-up, and a check of what it says
    if response.status_code != 200:
        raise SystemExit(f"{URL} answered {response.status_code}: {response.content[:200]!r}")
    text = response.content.decode()
    samples = sum(len(family.samples) for family in text_string_to_metric_families(text))
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        client.get(URL, **headers)
        times.append((time.perf_counter() - start) * 1000)
    with CaptureQueriesContext(connection) as queries:
        client.get(URL, **headers)
    return {
        "median": statistics.median(times),
        "p90": sorted(times)[int(len(times) * 0.9)],
        "min": min(times),
        "max": max(times),
        "queries": len(queries.captured_queries),
        "db_ms": sum(float(q["time"]) for q in queries.captured_queries) * 1000,
        "samples": samples,
        "bytes": len(text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("JOBQUEUE_BENCH_METRICS_DB", "jobqueue_bench_metrics"))
    parser.add_argument("--jobs", type=int, default=1_000_000, help="Jobs in the table (default 1,000,000).")
    parser.add_argument("--topics", type=int, default=100, help="Topics the jobs are spread over (default 100).")
    parser.add_argument("--requests", type=int, default=30, help="Timed scrapes (default 30).")
    parser.add_argument("--refill", action="store_true", help="Empty and refill the tables.")
    args = parser.parse_args()

    admin_changelist.create_database(args.db)
    admin_changelist.configure(args.db)
    from django import get_version
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.urls import include, path

    from jobqueue import engine
    from jobqueue.models import Job, Topic
    from jobqueue.models_api import ApiToken
    from jobqueue.resync import counted, resync

    admin_changelist.urlpatterns.append(path("metrics", include("jobqueue.contrib.metrics.urls")))
    call_command("migrate", verbosity=0)
    topics = [f"topic-{n:03d}" for n in range(args.topics)]
    if args.refill or Job.objects.count() != args.jobs or Topic.objects.count() != args.topics:
        print(f"filling {args.jobs:,} jobs over {args.topics} topics", file=sys.stderr)
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE jobqueue_job, jobqueue_execution, jobqueue_job_depends_on, jobqueue_topic "
                           "CASCADE")
        fill(args.jobs, topics)

    r = engine.get_redis()
    r.flushdb()
    start = time.perf_counter()
    report = resync(topics)
    resync_s = time.perf_counter() - start
    start = time.perf_counter()
    counted(topics)
    rebuild_s = time.perf_counter() - start
    register_workers(20, topics)

    user, _ = User.objects.get_or_create(username="prometheus")
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    _token, key = ApiToken.objects.issue(user, name="bench")
    result = timed_scrapes(Client(), key, args.requests)

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    info = r.info("server")
    queued = sum(report.pushed.values())
    print(f"## One metrics scrape, PostgreSQL {pg_version}, Redis {info['redis_version']}\n")
    print(f"Django {get_version()}, Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s); {args.jobs:,} jobs "
          f"over {args.topics} topics ({queued:,} queued in Redis), 20 live workers; "
          f"{args.requests} timed requests.\n")
    print("| scrape | median ms | p90 ms | min-max ms | SQL statements | DB ms | samples | bytes | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    met = "yes" if result["median"] < TARGET_MS else "no"
    print(f"| scrape of {args.topics} topics, {args.jobs:,} jobs | {result['median']:.1f} | {result['p90']:.1f} | "
          f"{result['min']:.1f}-{result['max']:.1f} | {result['queries']} | {result['db_ms']:.1f} | "
          f"{result['samples']:,} | {result['bytes']:,} | < {TARGET_MS} ms: {met} |")
    print(f"\nAfter the FLUSHDB, resync() of the {args.topics} topics (what a worker does at start: queues, "
          f"schedules, and the metrics counted from the tables) took {resync_s:.1f} s; counting the metrics "
          f"alone takes {rebuild_s:.1f} s (two aggregate queries over the jobs and executions tables).")


if __name__ == "__main__":
    main()
