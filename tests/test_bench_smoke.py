"""The benchmark runs end to end against the suite's Redis and database, printing its table.

Only that it works is checked here, never how fast anything is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def bench_env(tmp_path: Path) -> dict[str, str]:
    """Point the benchmark at the suite's servers: its Redis database and a database of its own."""
    env = dict(os.environ)
    env["JOBQUEUE_BENCH_REDIS_URL"] = settings.REDIS_URL
    env["JOBQUEUE_BENCH_PREFIX"] = f"{settings.JOBQUEUE['PREFIX']}bench"
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        env.update(
            JOBQUEUE_BENCH_DB="postgres",
            JOBQUEUE_BENCH_PG_NAME=f"{db['TEST']['NAME']}_bench",
            JOBQUEUE_BENCH_PG_HOST=db["HOST"],
            JOBQUEUE_BENCH_PG_PORT=str(db["PORT"]),
            JOBQUEUE_BENCH_PG_USER=db["USER"],
            JOBQUEUE_BENCH_PG_PASSWORD=db["PASSWORD"],
        )
    else:
        env.update(JOBQUEUE_BENCH_DB="sqlite", JOBQUEUE_BENCH_SQLITE_NAME=str(tmp_path / "bench.sqlite3"))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def drop_bench_database(env: dict[str, str]) -> None:
    if env.get("JOBQUEUE_BENCH_DB") != "postgres":
        return
    import psycopg
    from psycopg import sql

    params = {k.lower(): env[f"JOBQUEUE_BENCH_PG_{k}"] for k in ("HOST", "PORT", "USER", "PASSWORD")}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        name = sql.Identifier(env["JOBQUEUE_BENCH_PG_NAME"])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by workload label: the cells after the label."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def find(rows: dict[str, list[str]], prefix: str) -> list[str]:
    matches = [cells for label, cells in rows.items() if label.startswith(prefix)]
    assert len(matches) == 1, f"expected one row starting with {prefix!r} in {list(rows)}"
    return matches[0]


@pytest.mark.slow
def test_quick_benchmark_prints_jobqueue_and_celery_figures(tmp_path):
    env = bench_env(tmp_path)
    output = tmp_path / "latest.md"
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "single,drain_inline",
            "-n", "50", "--runs", "1", "--output", str(output)]
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        drop_bench_database(env)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = table_rows(done.stdout)
    assert rows["workload"][:5] == ["jobqueue", "Celery", "RQ", "procrastinate", "django-tasks-db"]
    number = re.compile(r"^\d[\d,]*$")
    on_postgres = env["JOBQUEUE_BENCH_DB"] == "postgres"
    for prefix in ("single enqueue, 50 calls", "drain 50 jobs, inline"):
        jobqueue, celery, rq, procrastinate, tasks_db = find(rows, prefix)[:5]
        assert number.match(jobqueue), (prefix, jobqueue)
        assert number.match(celery), (prefix, celery)
        assert number.match(rq), (prefix, rq)
        assert number.match(tasks_db), (prefix, tasks_db)
        # procrastinate needs PostgreSQL: measured there, "n/a" on SQLite.
        assert number.match(procrastinate) if on_postgres else procrastinate == "n/a", (prefix, procrastinate)
    assert "PostgreSQL" in done.stdout or "SQLite" in done.stdout
    assert output.read_text() == done.stdout.rstrip("\n") + "\n"
    assert output.with_suffix(".json").exists()
