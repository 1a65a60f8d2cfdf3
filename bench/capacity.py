"""What one job costs the servers: Redis commands and bytes, PostgreSQL statements and WAL.

    python bench/capacity.py                 # 2,000 jobs per phase
    python bench/capacity.py --jobs 5000

The script starts a ``redis-server`` and a PostgreSQL 15 cluster of its own (as the fault
runner does: bench/faultapp/servers.py), so that server-wide counters (``INFO
commandstats``, the WAL position) see this process's work only. In this process:

- **enqueue**: ``Job.objects.enqueue`` one job at a time, then ``enqueue_many`` in one call;
- **run**: a burst worker in this process (inline handlers, the no-op ``noop`` topic)
  drains the jobs enqueued one at a time.

For each phase: SQL statements (an execute wrapper on Django's connection; counted per
first word), WAL bytes (``pg_wal_lsn_diff`` of ``pg_current_wal_lsn()`` before and after,
with the server's default ``wal_level`` and ``full_page_writes``; ``fsync`` off), CPU time
of the PostgreSQL server and of Redis, Redis commands (``INFO commandstats`` deltas;
a Lua script's inner commands are counted as well as the ``EVALSHA``) and Redis memory
(``INFO memory`` ``used_memory`` with the jobs queued, and ``MEMORY USAGE`` of the topic's
keys). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_DATA = Path()  # the private PostgreSQL's data directory, set by main()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Statements:
    """An execute wrapper counting statements by their first word."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.kinds[sql.lstrip().split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)


def wal_lsn() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        return str(cursor.fetchone()[0])


def wal_bytes(since: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", [since])
        return int(cursor.fetchone()[0])


def pg_cpu_seconds(data_dir: Path) -> float:
    """CPU time (user + system) of the PostgreSQL server: its postmaster and every child
    (backends, WAL writer, checkpointer...), from /proc."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def redis_cpu_seconds(client: Any) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def commandstats(client: Any) -> Counter[str]:
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"])
                    for name, v in client.info("commandstats").items()})


def measure(name: str, n: int, action: Any) -> dict[str, Any]:
    from django.db import connection

    from jobqueue.engine import get_redis

    r = get_redis()
    stats = Statements()
    lsn = wal_lsn()
    before = commandstats(r)
    cpu = (pg_cpu_seconds(PG_DATA), redis_cpu_seconds(r), time.perf_counter())
    with connection.execute_wrapper(stats):
        action()
    seconds = time.perf_counter() - cpu[2]
    pg_cpu, redis_cpu = pg_cpu_seconds(PG_DATA) - cpu[0], redis_cpu_seconds(r) - cpu[1]
    after = commandstats(r)
    commands = Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0})
    commands.pop("info", None)  # this script's own reads of the counters
    return {"phase": name, "jobs": n, "sql": stats.kinds, "wal": wal_bytes(lsn), "redis": commands,
            "seconds": seconds, "pg_cpu": pg_cpu, "redis_cpu": redis_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args(argv)
    n = args.jobs

    import shutil
    import tempfile

    from bench.faultapp.servers import PostgresServer, RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="jobqueue-capacity-"))
    os.chmod(workdir, 0o755)  # the postgres user must reach its data directory inside
    redis_server, pg = RedisServer(workdir), PostgresServer(workdir)
    try:
        global PG_DATA
        redis_server.start()
        pg.init()
        pg.start()
        PG_DATA = pg.data
        os.environ.update(DJANGO_SETTINGS_MODULE="bench.settings", JOBQUEUE_BENCH_DB="postgres",
                          JOBQUEUE_BENCH_PG_HOST="127.0.0.1", JOBQUEUE_BENCH_PG_PORT=str(pg.port),
                          JOBQUEUE_BENCH_PG_NAME="jobqueue_capacity", JOBQUEUE_BENCH_REDIS_URL=redis_server.url,
                          JOBQUEUE_BENCH_PREFIX="jqcapacity")
        return measure_all(n)
    finally:
        from django.db import connections

        connections.close_all()
        redis_server.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def measure_all(n: int) -> int:
    from bench.run import setup_django

    setup_django()
    from django.db import connection

    from bench.workloads import reset
    from jobqueue.engine import get_redis, topic_keys
    from jobqueue.models import Job
    from jobqueue.worker import Worker

    if connection.vendor != "postgresql":
        raise SystemExit("bench/capacity.py measures PostgreSQL (JOBQUEUE_BENCH_DB=postgres)")
    reset()
    r = get_redis()
    Job.objects.enqueue("noop", {})  # the topic's row and Redis structures exist before the count
    Worker(topics=["noop"], install_signals=False, burst=True).run()
    memory_before = int(r.info("memory")["used_memory"])
    rows = [measure("enqueue, one call per job", n, lambda: [Job.objects.enqueue("noop", {"index": i})
                                                             for i in range(n)])]
    memory_after = int(r.info("memory")["used_memory"])
    keys = topic_keys("noop")
    key_bytes = {name: int(r.memory_usage(getattr(keys, name)) or 0) for name in ("queue", "entities", "metrics")}
    rows.append(measure("run (burst worker, inline, no-op handler)", n,
                        lambda: Worker(topics=["noop"], install_signals=False, burst=True).run()))
    rows.append(measure("enqueue_many, one call for all", n,
                        lambda: Job.objects.enqueue_many([("noop", {"index": i}) for i in range(n)])))
    done = Job.objects.filter(topic_id="noop", status="succeeded").count()
    if done != n + 1:
        raise SystemExit(f"{done} jobs succeeded, expected {n + 1}")

    print(f"Measured on {os.cpu_count()} cores, PostgreSQL {connection.pg_version}, "
          f"Redis {r.info('server')['redis_version']}, {n:,} jobs per phase.\n")
    print("| phase | jobs/s (this process) | PostgreSQL CPU µs / job | Redis CPU µs / job |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['phase']} | {n / row['seconds']:,.0f} | {row['pg_cpu'] / n * 1e6:,.0f} | "
              f"{row['redis_cpu'] / n * 1e6:,.1f} |")
    print()
    print("| phase | SQL statements / job | of which | WAL bytes / job | Redis commands / job | of which |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        sql_total = sum(row["sql"].values())
        redis_total = sum(row["redis"].values())
        sql_kinds = ", ".join(f"{k} {v:,}" for k, v in row["sql"].most_common()) + f" (of {n:,} jobs)"
        redis_kinds = ", ".join(f"{k} {v / n:.2f}" for k, v in row["redis"].most_common(10))
        print(f"| {row['phase']} | {sql_total / n:.2f} | {sql_kinds} | {row['wal'] / n:,.0f} | "
              f"{redis_total / n:.2f} | {redis_kinds} |")
    print("\nenqueue_many writes its rows with one COPY per call on PostgreSQL, which Django's execute "
          "wrapper does not see; its WAL is counted. PostgreSQL CPU is the whole server's (every "
          "process), read from /proc; Redis CPU is INFO cpu's used_cpu_user + used_cpu_sys.\n")
    print("| Redis memory with the jobs queued | bytes / job |")
    print("|---|---|")
    print(f"| used_memory delta ({n:,} queued) | {(memory_after - memory_before) / n:,.0f} |")
    for name, size in key_bytes.items():
        print(f"| MEMORY USAGE of the topic's `{name}` key | {size / n:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
