"""Benchmark jobqueue beside Celery, RQ, procrastinate and django-tasks-db on the same PostgreSQL and Redis.

    python bench/run.py                      # every workload, N=5000, median of 3 runs
    python bench/run.py --quick              # smoke run: N=500, one run, 20,000 jobs for memory
    python bench/run.py --only single,drain_inline -n 2000 --runs 5
    python bench/run.py --only bridge        # Celery messages into jobs (needs RabbitMQ too)
    python bench/run.py --only cluster       # topics on 1 vs 3 masters of a local Redis Cluster

Prints a Markdown table (also written to ``bench/results/latest.md``). Servers are
chosen by the ``JOBQUEUE_BENCH_*`` environment variables described in
``bench/settings.py``; the Redis database named there is flushed between workloads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORKLOADS = ("single", "bulk", "drain_inline", "drain_process", "latency", "scaling", "memory", "admin", "metrics",
             "bridge", "cluster", "growth", "redis_memory")
ADMIN_SCRIPT = ROOT / "bench" / "admin_changelist.py"
METRICS_SCRIPT = ROOT / "bench" / "metrics_scrape.py"
CLUSTER_SCRIPT = ROOT / "bench" / "cluster_scaling.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def positive(value: str) -> int:
        number = int(value)
        if number < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
        return number

    def workloads(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
            )
        return names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("-n", type=positive, help="jobs per drain and enqueue run (default 5000; 500 with --quick)")
    add("--runs", type=positive, help="runs per figure, the median is reported (default 3; 1 with --quick)")
    add("--only", type=workloads, default=list(WORKLOADS), help="comma-separated: " + ",".join(WORKLOADS))
    add("--quick", action="store_true", help="a smoke run: small N, one run")
    add("--bulk-jobs", type=positive, default=10_000, help="jobs in the bulk enqueue (default 10,000)")
    add("--memory-jobs", type=positive, help="jobs in the memory run (default 100,000; 20,000 with --quick)")
    add("--no-memory-peers", action="store_true", help="measure only jobqueue's worker memory")
    add("--growth-rows", type=positive, default=1_000_000,
        help="finished jobs in the table for the growth rows (default 1,000,000; the target is 10,000,000)")
    add("--growth-n", type=positive,
        help="jobs per growth run (default: -n). The growth rows compare two jobqueue figures taken "
             "minutes apart, so they gain from more jobs and runs than a comparison of systems")
    add("--growth-runs", type=positive, help="growth runs per set (default: --runs)")
    add("--growth-ids", choices=("ordered", "random"), default="ordered",
        help="the growth rows' ids: time-ordered as enqueue() makes them (default), or random, as an "
             "installation older than those ids holds them")
    add("--queued-jobs", type=positive, default=100_000,
        help="jobs queued for Redis bytes per queued job (default 100,000)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.md",
                        help="where to write the Markdown report (a .json beside it holds the raw figures)")
    args = parser.parse_args(argv)
    args.n = args.n or (500 if args.quick else 5000)
    args.runs = args.runs or (1 if args.quick else 3)
    args.memory_jobs = args.memory_jobs or (20_000 if args.quick else 100_000)
    args.growth_n = args.growth_n or args.n
    args.growth_runs = args.growth_runs or args.runs
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        ensure_postgres_database(db)
    call_command("migrate", verbosity=0, interactive=False)


def ensure_postgres_database(db: dict[str, Any]) -> None:
    """Create the benchmark database if it does not exist yet."""
    import psycopg
    from psycopg import sql

    params = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "password": db["PASSWORD"]}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
            log(f"created database {db['NAME']}")


#: The peers' cells of a row only jobqueue is measured in.
NOT_RUN = {"celery": "—", "rq": "—", "procrastinate": "—", "tasksdb": "—"}


def at_least(values: dict[str, float], ratios: dict[str, float]) -> bool:
    """Whether jobqueue reaches each ratio against each peer measured (a peer not run is skipped)."""
    jq = values["jobqueue"]
    return all(jq >= r * values[k] for k, r in ratios.items() if values.get(k))


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


class Bench:
    """Runs the chosen workloads and turns their figures into table rows."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: list[Any] = []
        self.raw: dict[str, Any] = {}
        self.notes: list[str] = []
        self.failed = False
        self.extra: dict[str, Any] = {}

    def repeat(self, name: str, func: Any, *args: Any) -> list[Any]:
        results = []
        for run in range(self.args.runs):
            log(f"{name}: run {run + 1}/{self.args.runs}")
            results.append(func(*args))
        self.raw[name] = results
        return results

    def per_system(self, results: list[dict[str, float]]) -> dict[str, float]:
        return {key: median([r[key] for r in results]) for key in results[0]}

    def throughput_row(self, label: str, values: dict[str, float], target: str, met: bool | None) -> None:
        from bench.report import Row, fmt_rate
        from bench.systems import COLUMNS

        jq = values.get("jobqueue")
        self.rows.append(Row(
            label=label,
            cells={k: fmt_rate(values.get(k)) for k in COLUMNS},
            ratios={k: ratio(jq, values.get(k)) for k in COLUMNS[1:]},
            target=target,
            met=met,
        ))

    def floor_note(self, name: str, measure: Any, values: dict[str, float], what: str, peer: str,
                   meaning: str) -> None:
        """Note the median of ``measure(n)`` (a floor, ``None`` where it cannot be measured)
        beside Celery's figure of the same run."""
        floors = [f for f in self.repeat(name, measure, self.args.n) if f is not None]
        if floors:
            floor = median(floors)
            self.notes.append(f"{what}: {floor:,.0f} jobs/s ({floor / values['celery']:.2f}× {peer}) for {meaning}")

    # -- workloads --------------------------------------------------------------------

    def single(self) -> None:
        from bench import workloads

        v = self.per_system(self.repeat("single", workloads.single_enqueue, self.args.n))
        label = (f"single enqueue, {self.args.n:,} calls (jobs/s): `enqueue()` / `delay()` / `Queue.enqueue` / "
                 "`defer()` / `enqueue()`")
        self.throughput_row(label, v, "≥ 1.0× Celery `delay()` and procrastinate `defer()`",
                            at_least(v, {"celery": 1.0, "procrastinate": 1.0}))
        self.floor_note("single_floor", workloads.enqueue_floor, v, "single enqueue floor", "Celery `delay()`",
                        "a prepared `INSERT` of a job row with its commit plus one call of the push script sent "
                        "(its answer read before the next), with no Python around them: what `enqueue()` would "
                        "reach if its own code took no time.")

    def bulk(self) -> None:
        from bench import workloads

        n = self.args.bulk_jobs
        v = self.per_system(self.repeat("bulk", workloads.bulk_enqueue, n))
        label = f"bulk enqueue, {n:,} jobs in one call (jobs/s): `enqueue_many` / — / `enqueue_many`"
        self.throughput_row(label, v, "≥ 20,000 jobs/s", v["jobqueue"] >= 20_000)

    def drain_inline(self) -> None:
        from bench import workloads

        v = self.per_system(self.repeat("drain_inline", workloads.drain_inline, self.args.n, self.extra))
        label = (f"drain {self.args.n:,} jobs, inline, 1 worker (jobs/s): Celery `-P solo`, RQ `SimpleWorker`, "
                 "procrastinate concurrency 1, `db_worker`")
        self.throughput_row(label, v, "≥ 1.5× Celery solo and ≥ 4× procrastinate",
                            at_least(v, {"celery": 1.5, "procrastinate": 4.0}))
        self.floor_note("drain_floor", workloads.drain_floor, v, "drain floor", "Celery solo",
                        "the worker's own database and Redis calls with no Python around them (per 8 jobs, one "
                        "acknowledge-and-lease script call and one prepared statement that records the 8 "
                        "successes with their Execution rows and claims the next 8): what the drain would reach "
                        "if the worker's own code took no time.")

    def drain_process(self) -> None:
        from bench import workloads

        v = self.per_system(self.repeat("drain_process", workloads.drain_process, self.args.n, self.extra))
        label = f"drain {self.args.n:,} jobs, a process per job, 1 worker (jobs/s): RQ forking `Worker`"
        self.throughput_row(label, v, "≥ 2.0× RQ forking worker", ratio(v["jobqueue"], v["rq"]) >= 2.0)

    def latency(self) -> None:
        from bench import workloads
        from bench.report import Row, fmt_ms
        from bench.systems import COLUMNS, TasksDB

        results = self.repeat("latency", workloads.latency, self.args.n)
        for index, name in ((0, "p50"), (1, "p99")):
            v = {key: median([r[key][index] for r in results]) for key in results[0]}
            jq = v["jobqueue"]
            if index == 0:
                target, met = "≤ the best peer's p50", jq <= min(x for k, x in v.items() if k != "jobqueue")
            else:
                target, met = "≤ 10 ms", jq <= 10.0
            self.rows.append(Row(
                label=f"latency {name}, enqueue → handler start, idle worker, {workloads.LATENCY_JOBS} jobs "
                      f"{workloads.LATENCY_GAP * 1000:.0f} ms apart (ms)",
                cells={k: fmt_ms(v.get(k)) for k in COLUMNS},
                ratios={k: ratio(v.get(k), jq) for k in COLUMNS[1:]},
                target=target, met=met,
            ))
        calls = {key: median([r[key][2] for r in results]) for key in results[0]}
        self.notes.append("latency: of that, the enqueue call itself (p50, ms): "
                          + ", ".join(f"{k} {v:.1f}" for k, v in calls.items())
                          + " (jobqueue's includes the commit of the job row)."
                          f" django-tasks-db's `db_worker` polls every {TasksDB.INTERVAL} s when idle (its "
                          "default is 1 s); procrastinate's worker is woken by LISTEN/NOTIFY.")
        floors = [f for f in self.repeat("latency_floor", workloads.latency_floor, self.args.n) if f is not None]
        if floors:
            best = min((k for k in results[0] if k != "jobqueue"),
                       key=lambda k: median([r[k][0] for r in results]))
            best_p50 = median([r[best][0] for r in results])
            enqueue, whole = median([f[0] for f in floors]), median([f[1] for f in floors])
            gap = workloads.LATENCY_GAP * 1000
            self.notes.append(
                f"latency floors, jobs {gap:.0f} ms apart, no Python around the calls (p50): {enqueue:.2f} ms for a "
                "prepared `INSERT` of a job row with its commit, the push script's call sent as soon as the `INSERT` "
                f"is (the durable part of an enqueue alone; {enqueue / best_p50:.2f}× the best peer's whole "
                f"p50, {best} {best_p50:.1f} ms), and {whole:.2f} ms ({whole / best_p50:.2f}×) to the moment a worker "
                "(`bench/floorworker.py`) has been woken, leased the job (one round trip) and claimed it (one "
                "round trip: the wait for the row's commit and the prepared `UPDATE`, committed without waiting for "
                "the WAL flush): the least jobqueue's own latency could be here.")

    def scaling(self) -> None:
        from bench import workloads
        from bench.report import Row

        variants = ((workloads.SCALING_SLEEP, min(self.args.n, 1000), "≥ 1.6×"), (0.0, self.args.n, ""))
        for sleep, n, target in variants:
            results = self.repeat(f"scaling_{sleep}", workloads.scaling, n, sleep)
            one = median([r["jobqueue"][0] for r in results])
            two = median([r["jobqueue"][1] for r in results])
            what = f"{sleep * 1000:.0f} ms jobs" if sleep else "no-op jobs"
            self.rows.append(Row(
                label=f"scaling, {n:,} {what}, topic concurrency 2: 1 → 2 worker processes (jobs/s)",
                cells={"jobqueue": f"{one:,.0f} → {two:,.0f} ({two / one:.2f}×)", "celery": "—", "rq": "—"},
                target=target, met=(two / one >= 1.6) if target else None,
            ))

    def growth(self) -> None:
        from bench import workloads
        from bench.report import Row

        rows, ids = self.args.growth_rows, self.args.growth_ids
        n, runs = self.args.growth_n, self.args.growth_runs
        log(f"growth: {runs} run(s) of {n:,} jobs on empty tables, with {rows:,} finished jobs ({ids} ids), then "
            "on empty tables again")
        result = workloads.growth(n, rows, runs, self.extra, ids)
        self.raw["growth"] = result
        for key, what in (("enqueue", f"single enqueue, {n:,} calls"),
                          ("drain", f"drain {n:,} jobs, inline, 1 worker")):
            empty, full = result["empty"][key], result["full"][key]
            self.rows.append(Row(
                label=f"{what} (jobs/s): empty tables → {rows:,} finished jobs and their Executions"
                      + ("" if ids == "ordered" else ", their ids random (version 4)"),
                cells={**NOT_RUN, "jobqueue": f"{empty:,.0f} → {full:,.0f} ({full / empty:.2f}×)"},
                target="≥ 0.8× the empty-table figure", met=full >= 0.8 * empty,
            ))
        self.notes.append(f"growth: {rows:,} finished jobs (and Executions) written by one INSERT ... SELECT from "
                          f"generate_series in {result['fill_seconds']:,.0f} s, then VACUUM ANALYZE; the workers' "
                          f"metrics tally then took them in {result['rollup_seconds']:,.0f} s; a CHECKPOINT "
                          f"({result['checkpoint_seconds']:,.0f} s) wrote the set-up out before the measured runs, "
                          "as one did before each set of empty-table runs. The empty-table figure is the median of "
                          "the runs before the fill and after the rows were removed (each run, jobs/s: "
                          + "; ".join(f"{key}: " + ", ".join(
                              f"{when} " + " / ".join(f"{v:,.0f}" for v in result["runs"][when][key])
                              for when in ("empty before", "full", "empty after")) for key in ("enqueue", "drain"))
                          + ").")

    def redis_memory(self) -> None:
        from bench import workloads
        from bench.report import Row

        jobs = self.args.queued_jobs
        log(f"redis_memory: {jobs:,} jobs queued (one run)")
        result = workloads.redis_bytes_per_job(jobs)
        self.raw["redis_memory"] = result
        self.rows.append(Row(
            label=f"Redis memory per queued job, {jobs:,} queued (bytes, `INFO memory` used_memory before/after)",
            cells={**NOT_RUN, "jobqueue": f"{result['bytes_per_job']:,.0f}"},
            target="≤ 150 B", met=result["bytes_per_job"] <= 150,
        ))
        if result["queued"] != jobs + 1:  # and the one job queued before the first reading
            self.notes.append(f"redis_memory: {result['queued']:,} ids in the queue, expected {jobs + 1:,}.")

    def bridge(self) -> None:
        from bench import bridging

        results = self.repeat("bridge", bridging.bridge, self.args.n)
        for broker in results[0]:
            v = {key: median([r[broker][key] for r in results]) for key in ("jobqueue", "celery")}
            label = (f"Celery messages from {broker}, {self.args.n:,} (messages/s): `jobbridge celery` into jobs / "
                     "a Celery worker `-P solo` running them")
            self.throughput_row(label, v, "", None)

    def memory(self) -> None:
        from bench import workloads
        from bench.report import Row

        n = self.args.memory_jobs
        log(f"memory: {n:,} jobs per system (one run)")
        result = workloads.memory(n, peers=not self.args.no_memory_peers)
        self.raw["memory"] = result
        cells = {k: f"{a:.1f} → {b:.1f} (+{b - a:.1f})" for k, (a, b, _peak) in result.items()}
        growth = result["jobqueue"][1] - result["jobqueue"][0]
        self.rows.append(Row(
            label=f"worker RSS, after warm-up → after {n:,} jobs (MB): Celery solo, RQ `SimpleWorker`",
            cells={"celery": "—", "rq": "—", **cells}, target="growth ≤ 20 MB", met=growth <= 20,
        ))
        self.notes.append("Memory is measured once (not a median); peak RSS (VmHWM): "
                          + ", ".join(f"{k} {v[2]:.1f} MB" for k, v in result.items()) + ".")

    def admin(self) -> None:
        from bench.report import Row

        output, error = run_admin_script()
        pages = parse_admin_table(output or "")
        value = next((ms for label, ms in pages.items() if label.startswith("job list")), None)
        self.raw["admin"] = {"pages": pages, "output": output, "error": error}
        self.rows.append(Row(
            label="admin job changelist, 1,000,000 rows on PostgreSQL (server time, median of requests)",
            cells={"jobqueue": "pending" if value is None else f"{value:,.0f} ms", "celery": "—", "rq": "—"},
            target="< 500 ms", met=None if value is None else value < 500,
        ))
        if error:
            self.failed = True
            self.notes.append(f"admin: {error}")
        elif output and value is None:
            self.notes.append("admin: bench/admin_changelist.py printed no \"job list\" row.")
        if pages:
            slowest = max(pages, key=pages.__getitem__)
            self.notes.append(f"admin: slowest page measured is \"{slowest}\", {pages[slowest]:,.0f} ms "
                              "(every page: `python bench/admin_changelist.py`).")

    def metrics(self) -> None:
        from bench.report import Row

        output, error = run_script(METRICS_SCRIPT, "metrics: running bench/metrics_scrape.py (fills its own "
                                   "database with 1,000,000 jobs once)")
        row = next((cells for label, cells in parse_table(output or "").items() if label.startswith("scrape of")), None)
        value = float(row[0].replace(",", "")) if row else None
        self.raw["metrics"] = {"output": output, "error": error}
        self.rows.append(Row(
            label="Prometheus scrape, 100 topics, 1,000,000 jobs on PostgreSQL (server time, median of requests)",
            cells={"jobqueue": "pending" if value is None else f"{value:,.1f} ms", "celery": "—", "rq": "—"},
            target="< 50 ms", met=None if value is None else value < 50,
        ))
        if error:
            self.failed = True
            self.notes.append(f"metrics: {error}")
        elif output:
            self.notes.append("metrics: " + output.strip().splitlines()[-1])

    def cluster(self) -> None:
        from bench.report import Row

        output, error = run_script(CLUSTER_SCRIPT, "cluster: running bench/cluster_scaling.py (a Redis Cluster "
                                   "of its own, 3 masters + 3 replicas)")
        row = next((cells for label, cells in parse_table(output or "").items()
                    if label.startswith("Redis Cluster")), None)
        self.raw["cluster"] = {"output": output, "error": error}
        self.rows.append(Row(
            label="Redis side on a Redis Cluster, 6 topics, one client process each (jobs/s): "
                  "topics on 1 master → spread over 3 (no database; bench/cluster_scaling.py)",
            cells={"jobqueue": "pending" if row is None else row[0], "celery": "—", "rq": "—"},
            target="", met=None,
        ))
        if error:
            self.failed = True
            self.notes.append(f"cluster: {error}")
        elif row is not None:
            ceiling = next((line for line in (output or "").splitlines() if line.startswith("One master")), "")
            self.notes.append(f"cluster: measured on {row[2]} cores, both layouts in the same run on the same "
                              f"cluster; the client processes share those cores with the three masters (the "
                              f"busiest master used {row[1]} of a core). {ceiling}")

    def run(self) -> None:
        from bench.procs import BenchError

        for name in self.args.only:
            try:
                getattr(self, name)()
            except BenchError as exc:
                self.failed = True
                log(f"{name} failed: {exc}")
                self.notes.append(f"{name} failed: {str(exc).splitlines()[0]}")
        startup = self.extra.get("startup", {})
        if startup:
            self.notes.append("Drains are timed from the first job's start to the last job's end; worker "
                              "start-up (process start to first job, median s): "
                              + ", ".join(f"{k} {median(v):.2f}" for k, v in sorted(startup.items())) + ".")


def run_admin_script() -> tuple[str | None, str]:
    """Run ``bench/admin_changelist.py`` if it exists: its output, or an error message."""
    return run_script(ADMIN_SCRIPT, "admin: running bench/admin_changelist.py (fills its own database with "
                      "1,000,000 jobs once)")


def run_script(script: Path, message: str) -> tuple[str | None, str]:
    """Run one of the benchmark's own scripts if it exists: its output, or an error message."""
    from bench.procs import worker_env

    if not script.exists():
        return None, ""
    log(message)
    env = worker_env()
    env.pop("DJANGO_SETTINGS_MODULE")  # the script configures Django itself
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=4 * 3600)
    if done.returncode:
        name = script.relative_to(ROOT)
        return None, f"{name} exited with {done.returncode}: {done.stderr.strip()[-300:]}"
    return done.stdout, ""


def parse_table(output: str) -> dict[str, list[str]]:
    """The cells after the label, by label, of a script's Markdown table rows."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 1 and not line.startswith("| ---"):
            rows[cells[0]] = cells[1:]
    return rows


def parse_admin_table(output: str) -> dict[str, float]:
    """Median ms by page from the script's Markdown table (``| page | median ms | ...``)."""
    pages = {}
    for label, cells in parse_table(output).items():
        try:
            pages[label] = float(cells[0].replace(",", ""))
        except ValueError:
            continue  # the header
    return pages


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so every workload still stops the workers it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    setup_django()
    from bench.report import document, machine

    bench = Bench(args)
    bench.run()  # each workload stops the workers it started (bench.procs.Procs)
    settings = {"N": args.n, "runs": args.runs, "bulk": args.bulk_jobs, "memory jobs": args.memory_jobs}
    if "growth" in args.only:
        settings["growth rows"] = args.growth_rows
        settings["growth N"] = args.growth_n
        settings["growth runs"] = args.growth_runs
        settings["growth ids"] = args.growth_ids
    if "redis_memory" in args.only:
        settings["queued jobs"] = args.queued_jobs
    text = document(bench.rows, machine(), settings, bench.notes)
    for name in ("admin", "metrics"):
        output = bench.raw.get(name, {}).get("output")
        if output:
            text += "\n" + output.strip() + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    args.output.with_suffix(".json").write_text(json.dumps(bench.raw, indent=1, default=str))
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
