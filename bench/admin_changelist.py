"""How fast the admin's job list renders over a million jobs on PostgreSQL.

    python bench/admin_changelist.py                 # fill (once) and time the change list
    python bench/admin_changelist.py --actions       # also time bulk actions on 100,000 jobs
    python bench/admin_changelist.py --refill --jobs 200000
    python bench/admin_changelist.py --layout finished --jobs 10000000 --db jq_10m  # every page

``--layout finished`` fills the table the way a system that has run for long looks: every
job finished (succeeded, failed or cancelled), each with its execution, but the newest
``--active`` ones (queued, scheduled, waiting, running), and the metrics tally rolled up
as its workers would have; it then times every admin page and the ``/stats`` API.

The script uses its own database (``jobqueue_bench_admin`` unless ``--db`` says
otherwise), created if missing and filled with ``INSERT ... SELECT FROM
generate_series`` in a few large statements, then ``VACUUM ANALYZE``. A filled
database is reused by the next run. Requests go through Django's test client as a
logged-in superuser, so the time measured is the server's: URL resolution,
queries, template rendering. Results are printed as Markdown.

Connection settings: ``JOBQUEUE_BENCH_PG_HOST`` (127.0.0.1), ``..._PG_PORT`` (5432),
``..._PG_USER`` (postgres), ``..._PG_PASSWORD``; Redis for ``--actions``:
``JOBQUEUE_BENCH_REDIS_URL`` (``redis://127.0.0.1:6379/13``), keys under ``jqbenchadmin``.
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

#: Statuses of the generated jobs, as (status, share in percent).
STATUS_MIX = [
    ("succeeded", 80),
    ("failed", 8),
    ("queued", 7),
    ("running", 2),
    ("scheduled", 1),
    ("cancelled", 2),
]
TOPICS = ["thumbnails", "emails", "reports", "webhooks"]
ACTION_TOPIC = "bulk-actions"
#: Rows per INSERT statement while filling.
FILL_BATCH = 250_000

#: ``--layout finished``: the statuses of the finished jobs, as (status, share in percent).
FINISHED_MIX = [("succeeded", 90), ("failed", 8), ("cancelled", 2)]
#: ``--layout finished``: the statuses of the newest ``--active`` jobs.
ACTIVE_MIX = [("queued", 50), ("running", 10), ("scheduled", 30), ("waiting", 10)]

urlpatterns: list[Any] = []  # filled once Django is set up (this module is ROOT_URLCONF)


def configure(db_name: str) -> None:
    import django
    from django.conf import settings

    env = os.environ.get
    redis_url = env("JOBQUEUE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        STATIC_URL="/static/",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "jobqueue",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db_name,
                "USER": env("JOBQUEUE_BENCH_PG_USER", "postgres"),
                "PASSWORD": env("JOBQUEUE_BENCH_PG_PASSWORD", ""),
                "HOST": env("JOBQUEUE_BENCH_PG_HOST", "127.0.0.1"),
                "PORT": env("JOBQUEUE_BENCH_PG_PORT", "5432"),
            }
        },
        CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url}},
        JOBQUEUE={"CACHE_ALIAS": "default", "PREFIX": "jqbenchadmin"},
    )
    django.setup()
    from django.contrib import admin
    from django.urls import include, path

    urlpatterns.append(path("admin/", admin.site.urls))
    urlpatterns.append(path("jobs/api/", include("jobqueue.api.urls")))


def create_database(db_name: str) -> None:
    import psycopg

    env = os.environ.get
    conninfo = {
        "host": env("JOBQUEUE_BENCH_PG_HOST", "127.0.0.1"),
        "port": env("JOBQUEUE_BENCH_PG_PORT", "5432"),
        "user": env("JOBQUEUE_BENCH_PG_USER", "postgres"),
        "password": env("JOBQUEUE_BENCH_PG_PASSWORD", ""),
        "dbname": "postgres",
    }
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone():
            conn.execute(f'CREATE DATABASE "{db_name}"')
            print(f"created database {db_name}", file=sys.stderr)


def _status_case(index: str, mix: list[tuple[str, int]] | None = None) -> str:
    """A SQL CASE giving each generated row its status from ``mix`` (:data:`STATUS_MIX`)."""
    parts, upper = [], 0
    for status, share in mix or STATUS_MIX:
        upper += share
        parts.append(f"WHEN mod({index}, 100) < {upper} THEN '{status}'")
    return "CASE " + " ".join(parts) + " END"


def fill(total: int, topics: list[str], status_sql: str | None = None, span_days: int = 30) -> None:
    """Insert ``total`` jobs spread over ``topics`` and the last ``span_days`` days."""
    from django.db import connection

    from jobqueue.models import Job, Topic

    for name in topics:
        Topic.objects.get_or_create(name=name)
    status = status_sql or _status_case("i")
    step = span_days * 86400 / max(total, 1)
    topic_array = "ARRAY[" + ", ".join(f"'{t}'" for t in topics) + "]"
    # Column -> SQL expression over i (the row number) and s (its status); checked against the model.
    columns = {
        "id": "gen_random_uuid()",
        "topic": f"({topic_array})[1 + mod(i / 100, {len(topics)})]",  # every topic gets every status
        "status": "s",
        "priority": "mod(i, 5) * 10 - 20",
        "payload": "jsonb_build_object('n', i, 'src', 'https://img.example.com/' || i || '.png')",
        "result": "CASE WHEN s = 'succeeded' THEN jsonb_build_object('ok', true) END",
        "error": "CASE WHEN s = 'failed' THEN 'RuntimeError: attempt ' || (mod(i, 3) + 1) || ' failed' "
        "ELSE '' END",
        "progress": "CASE WHEN s IN ('succeeded', 'failed') THEN 100 WHEN s = 'running' THEN mod(i, 100) "
        "ELSE 0 END",
        "progress_message": "CASE WHEN s = 'running' THEN 'step ' || mod(i, 10) ELSE '' END",
        "stage": "CASE WHEN s = 'running' THEN 'rendering' ELSE '' END",
        "entity_id": "'ent-' || i",
        "key": "NULL::varchar",
        "parent_id": "NULL::uuid",
        "has_dependents": "false",
        "trace_context": "NULL::jsonb",
        "attempts": "CASE WHEN s IN ('queued', 'scheduled') THEN 0 ELSE 1 + mod(i, 3) END",
        "max_attempts": "3",
        "run_after": "CASE WHEN s = 'scheduled' THEN now() + interval '1 hour' END",
        "timeout": "300",
        "worker_id": "CASE WHEN s IN ('queued', 'scheduled') THEN '' ELSE 'worker-' || mod(i, 8) END",
        "created_at": f"now() - ({total} - i) * interval '{step:.6f} seconds'",
        "updated_at": f"now() - ({total} - i) * interval '{step:.6f} seconds'",
        "queued_at": f"now() - ({total} - i) * interval '{step:.6f} seconds'",
        "started_at": "CASE WHEN s NOT IN ('queued', 'scheduled', 'waiting') "
        f"THEN now() - ({total} - i) * interval '{step:.6f} seconds' END",
        "finished_at": "CASE WHEN s IN ('succeeded', 'failed', 'cancelled') "
        f"THEN now() - ({total} - i) * interval '{step:.6f} seconds' + interval '2 seconds' END",
    }
    model_columns = {f.column for f in Job._meta.concrete_fields}
    if set(columns) != model_columns:
        raise SystemExit(f"The Job table changed: generate {sorted(model_columns ^ set(columns))} too.")
    names = ", ".join(f'"{c}"' for c in columns)
    exprs = ", ".join(columns.values())
    with connection.cursor() as cursor:
        for start in range(0, total, FILL_BATCH):
            stop = min(total, start + FILL_BATCH)
            cursor.execute(
                f"INSERT INTO jobqueue_job ({names}) SELECT {exprs} FROM "
                f"(SELECT i, {status} AS s FROM generate_series(%s, %s) AS i) AS rows",
                [start, stop - 1],
            )
            print(f"  inserted {stop:,} / {total:,}", file=sys.stderr)
        cursor.execute("VACUUM ANALYZE jobqueue_job")


def finished_status_sql(total: int, active: int) -> str:
    """Every row finished (:data:`FINISHED_MIX`) but the newest ``active`` (:data:`ACTIVE_MIX`)."""
    return (f"CASE WHEN i >= {total - active} THEN ({_status_case('i', ACTIVE_MIX)}) "
            f"ELSE ({_status_case('i', FINISHED_MIX)}) END")


def fill_executions() -> None:
    """One execution for every job that started, as its worker would have written it."""
    from django.db import connection

    outcome = ("CASE j.status WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed' "
               "WHEN 'cancelled' THEN 'cancelled' ELSE 'running' END")
    with connection.cursor() as cursor:
        cursor.execute(f"""
            INSERT INTO jobqueue_execution (attempt, worker_id, hostname, pid, started_at, finished_at, outcome,
                                            stdout, stderr, error, traceback, duration, job_id, error_class)
            SELECT j.attempts, j.worker_id, 'bench', 1, j.started_at, j.finished_at, {outcome}, '', '', j.error,
                   '', CASE WHEN j.finished_at IS NOT NULL THEN 2.0 END, j.id,
                   CASE WHEN j.status = 'failed' THEN 'RuntimeError' ELSE '' END
            FROM jobqueue_job j WHERE j.started_at IS NOT NULL AND j.topic <> %s
        """, [ACTION_TOPIC])
        print("  inserted the executions", file=sys.stderr)
        cursor.execute("VACUUM ANALYZE jobqueue_execution")


def roll_up_tally() -> float:
    """Roll every finished row up into the metrics tally, as a running system's workers have."""
    from jobqueue.resync import roll_up

    start = time.perf_counter()
    while roll_up(rows=500_000):
        pass
    return time.perf_counter() - start


def job_count() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobqueue_job WHERE topic <> %s", [ACTION_TOPIC])
        return int(cursor.fetchone()[0])


def timed(client: Any, url: str, requests: int, method: str = "get", data: Any = None) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call = getattr(client, method)
    response = call(url, data) if data is not None else call(url)  # warm-up, and a status check
    if response.status_code not in ((200,) if method == "get" else (200, 302)):
        raise SystemExit(f"{url} answered {response.status_code}")
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        response = call(url, data) if data is not None else call(url)
        samples.append((time.perf_counter() - start) * 1000)
    with CaptureQueriesContext(connection) as queries:
        call(url, data) if data is not None else call(url)
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "queries": len(queries.captured_queries),
        "db_ms": sum(float(q["time"]) for q in queries.captured_queries) * 1000,
    }


def changelist_scenarios() -> list[tuple[str, str]]:
    from django.utils import timezone

    from jobqueue.models import Job

    newest = (
        Job.objects.exclude(topic_id=ACTION_TOPIC)
        .order_by("-created_at")
        .values_list("pk", "created_at", "entity_id")
        .first()
    )
    pk, created, entity = newest
    local = timezone.localtime(created)
    base = "/admin/jobqueue/job/"
    return [
        ("job list, default (newest first)", base),
        ("filter: status = failed", base + "?status__exact=failed"),
        ("filter: status = queued", base + "?status__exact=queued"),
        ("filter: topic = emails", base + "?topic__name__exact=emails"),
        ("filter: topic = emails, status = failed", base + "?topic__name__exact=emails&status__exact=failed"),
        ("filter: has parent = no", base + "?has_parent=no"),
        (
            "date hierarchy: this month",
            base + f"?created_at__year={local.year}&created_at__month={local.month}",
        ),
        ("page 50", base + "?p=50"),
        ("search: id prefix", base + f"?q={str(pk)[:8]}"),
        ("search: entity id (entity:...)", base + f"?q=entity:{entity}"),
        ("search: payload text (payload:..., the newest jobs only)", base + "?q=payload:img.example.com/123456.png"),
        ("search: text (id, entity id, payload of the newest jobs)", base + "?q=img.example.com/123456.png"),
        (
            "search: payload text, date hierarchy: this month",
            base + f"?q=payload:img.example.com/123456.png&created_at__year={local.year}"
            f"&created_at__month={local.month}",
        ),
        ("topic list", "/admin/jobqueue/topic/"),
        ("dashboard", "/admin/jobqueue/job/dashboard/"),
    ]


def page_scenarios() -> list[tuple[str, str]]:
    """Every admin page and the ``/stats`` API (``--layout finished``)."""
    from jobqueue.models import Execution, Job, Topic

    topic = Topic.objects.get(name="emails").pk
    newest = Job.objects.exclude(topic_id=ACTION_TOPIC).order_by("-created_at").values_list("pk", flat=True).first()
    failed = (Job.objects.filter(status="failed", topic_id="emails").order_by("-finished_at")
              .values_list("pk", flat=True).first())
    execution = Execution.objects.order_by("-pk").values_list("pk", flat=True).first()
    base = "/admin/jobqueue/job/"
    return [
        ("job list, default (newest first)", base),
        ("job list: status = failed", base + "?status__exact=failed"),
        ("job list: status = queued", base + "?status__exact=queued"),
        ("job list: topic = emails", base + "?topic__name__exact=emails"),
        ("job list: search payload text", base + "?q=payload:img.example.com/123456.png"),
        ("job list: search text", base + "?q=img.example.com/123456.png"),
        ("job list: search id prefix", base + f"?q={str(newest)[:8]}"),
        ("job change page (newest job)", base + f"{newest}/change/"),
        ("job change page (a failed job)", base + f"{failed}/change/"),
        ("execution list", "/admin/jobqueue/execution/"),
        ("execution change page", f"/admin/jobqueue/execution/{execution}/change/"),
        ("topic list", "/admin/jobqueue/topic/"),
        ("topic change page", f"/admin/jobqueue/topic/{topic}/change/"),
        ("dashboard", "/admin/jobqueue/job/dashboard/"),
        ("API GET /stats", "/jobs/api/stats"),
        ("API GET /stats/emails", "/jobs/api/stats/emails"),
    ]


def bench_actions(client: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Cancel, then requeue, ``count`` queued jobs of one topic with "select all matching"."""
    from django.db import connection

    from jobqueue import engine
    from jobqueue.models import Job
    from jobqueue.resync import resync

    Job.objects.filter(topic_id=ACTION_TOPIC).delete()
    engine.get_redis().flushdb()
    fill(count, [ACTION_TOPIC], status_sql="'queued'", span_days=1)
    resync([ACTION_TOPIC])
    some = list(Job.objects.filter(topic_id=ACTION_TOPIC).values_list("pk", flat=True)[:2])
    results = []
    for label, query, action in (
        (
            f"cancel all {count:,} queued jobs of a topic",
            "?topic__name__exact=" + ACTION_TOPIC,
            "cancel_jobs",
        ),
        (
            f"requeue all {count:,} cancelled jobs of a topic",
            f"?topic__name__exact={ACTION_TOPIC}&status__exact=cancelled",
            "requeue_jobs",
        ),
    ):
        data = {
            "action": action,
            "index": 0,
            "select_across": "1",
            "_selected_action": [str(p) for p in some],
        }
        start = time.perf_counter()
        response = client.post("/admin/jobqueue/job/" + query, data)
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 302, response.status_code
        results.append(
            (label, {"median": elapsed, "min": elapsed, "max": elapsed, "queries": None, "db_ms": None})
        )
    queued = Job.objects.filter(topic_id=ACTION_TOPIC, status="queued").count()
    depth = engine.depths(ACTION_TOPIC)["queued"]
    if queued != count or depth != count:
        raise SystemExit(f"after the actions: {queued} queued rows, {depth} in Redis; expected {count}")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobqueue_job")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=os.environ.get("JOBQUEUE_BENCH_ADMIN_DB", "jobqueue_bench_admin"))
    parser.add_argument("--jobs", type=int, default=1_000_000, help="Jobs in the table (default 1,000,000).")
    parser.add_argument("--requests", type=int, default=7, help="Timed requests per page (default 7).")
    parser.add_argument("--refill", action="store_true", help="Empty and refill the table.")
    parser.add_argument("--layout", choices=["mixed", "finished"], default="mixed",
                        help="mixed: the job list's status mix; finished: every job finished but --active, "
                        "with executions and the metrics tally, and every page timed.")
    parser.add_argument("--active", type=int, default=2_000,
                        help="--layout finished: jobs not finished (the newest; default 2,000).")
    parser.add_argument("--fill-only", action="store_true", help="Fill (if needed) and stop.")
    parser.add_argument(
        "--actions",
        type=int,
        nargs="?",
        const=100_000,
        default=0,
        metavar="N",
        help="Also time select-all cancel and requeue on N queued jobs (default 100,000).",
    )
    args = parser.parse_args()

    create_database(args.db)
    configure(args.db)
    from django import get_version
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)
    have = job_count()
    if args.refill or have != args.jobs:
        print(f"filling {args.jobs:,} jobs (found {have:,})", file=sys.stderr)
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE jobqueue_job, jobqueue_execution, jobqueue_job_depends_on")
            cursor.execute("DELETE FROM jobqueue_metricstally")
        started = time.perf_counter()
        if args.layout == "finished":
            fill(args.jobs, TOPICS, status_sql=finished_status_sql(args.jobs, args.active))
            fill_executions()
        else:
            fill(args.jobs, TOPICS)
        print(f"filled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.layout == "finished":
        print(f"tally rolled up in {roll_up_tally():.1f} s", file=sys.stderr)
    if args.fill_only:
        return
    user = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench@example.com", "bench"
    )
    client = Client()
    client.force_login(user)

    scenarios = page_scenarios() if args.layout == "finished" else changelist_scenarios()
    rows = [(label, timed(client, url, args.requests)) for label, url in scenarios]
    if args.actions:
        rows += bench_actions(client, args.actions)

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    title = "Admin pages and /stats" if args.layout == "finished" else "Admin change list"
    print(f"## {title} over {job_count():,} jobs\n")
    print(
        f"PostgreSQL {pg_version}, Django {get_version()}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPU(s). Server time through Django's test client, median of {args.requests} "
        "requests after one warm-up; queries and their database time from one more request.\n"
    )
    print("| page | median ms | min ms | max ms | queries | DB ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, r in rows:
        queries = "" if r["queries"] is None else str(r["queries"])
        db_ms = "" if r["db_ms"] is None else f"{r['db_ms']:.1f}"
        print(f"| {label} | {r['median']:.1f} | {r['min']:.1f} | {r['max']:.1f} | {queries} | {db_ms} |")


if __name__ == "__main__":
    main()
