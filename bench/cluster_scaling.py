"""Does the Redis side of jobqueue grow with the shards of a Redis Cluster?

    python bench/cluster_scaling.py                     # 6 topics x 3,000 jobs, 6 processes, 3 runs
    python bench/cluster_scaling.py --jobs 20000 --processes 6 --runs 5

One local cluster of 3 masters and 3 replicas (scripts/redis-cluster.sh on ports
``JOBQUEUE_BENCH_CLUSTER_PORT``..+5, default 7100; stopped at the end) holds both layouts,
measured in the same run, one after the other: the topics all on **one master**, and the
same number of topics spread over **all three masters**. Each client process owns one
topic: it pushes its jobs (1,000 ids per call, untimed), then drains them through the
engine the way a worker's loop does with its default read-ahead (``pop`` of 8 ids, then one
``acks_and_pop`` that acknowledges them, with their metrics, and leases the next 8: one Lua
call per 8 jobs). No database: this isolates the Redis side, which is what a shard bounds.
The figure is jobs per second over all processes, from the first pop to the last ack.
Results are printed as Markdown.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def configure(url: str) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "jobqueue"],
            DATABASES={},
            USE_TZ=True,
            JOBQUEUE={"REDIS_URL": url, "PREFIX": "jqcluster"},
        )
        django.setup()


def topics_on(url: str, count: int, spread: bool) -> list[str]:
    """``count`` topic names: all on the first master, or round-robin over every master."""
    from jobqueue import engine

    client = engine.get_redis()
    masters = sorted(node.name for node in client.get_primaries())
    wanted = [masters[i % len(masters)] if spread else masters[0] for i in range(count)]
    found: list[str] = []
    i = 0
    while len(found) < count:
        name = f"bench-{i}"
        i += 1
        if client.get_node_from_key(engine.topic_keys(name).queue).name == wanted[len(found)]:
            found.append(name)
    return found


def drain(url: str, topic: str, jobs: int, start: float, out: multiprocessing.Queue, batch: int = 8) -> None:
    configure(url)
    from jobqueue import engine

    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    for i in range(0, jobs, 1000):
        engine.push(topic, [(job, 0, None) for job in ids[i : i + 1000]])
    while time.time() < start:  # every process starts draining at the same moment
        time.sleep(0.001)
    began = time.time()
    done = 0
    tally = engine.tally("succeeded", wait=0.001, run=0.0)
    popped = engine.pop(topic, batch)
    while popped:
        done += len(popped)
        popped = engine.acks_and_pop(topic, [(job, "", tally) for job in popped], batch)
    out.put((began, time.time(), done))


def masters_cpu() -> dict[str, float]:
    """``{master: seconds of CPU (user + system) it has used}``, from ``INFO cpu``."""
    from jobqueue import engine

    client = engine.get_redis()
    return {node.name: float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            for node in client.get_primaries()
            for info in [client.info("cpu", target_nodes=node)]}


def run_layout(url: str, topics: list[str], jobs: int, batch: int) -> tuple[float, float, float]:
    """Drains ``jobs`` per topic; returns (jobs/s, the busiest master's share of one core,
    microseconds of CPU of all masters together per job)."""
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    cpu_before = masters_cpu()
    start = time.time() + 1.0 + 0.2 * len(topics)  # past every process's pushes
    procs = [ctx.Process(target=drain, args=(url, t, jobs, start, out, batch)) for t in topics]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    cpu_after = masters_cpu()
    for p in procs:
        p.join()
    total = sum(done for _, _, done in results)
    if total != jobs * len(topics):
        raise RuntimeError(f"drained {total} jobs, expected {jobs * len(topics)}")
    elapsed = max(end for _, end, _ in results) - min(began for began, _, _ in results)
    # The pushes before ``start`` are counted too: a small overstatement of the busy share.
    used = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    return total / elapsed, max(used.values()) / elapsed, sum(used.values()) / total * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per topic (default 3,000)")
    parser.add_argument("--processes", type=int, default=6, help="topics, one client process each (default 6)")
    parser.add_argument("--runs", type=int, default=3, help="runs per layout, median reported (default 3)")
    parser.add_argument("--batch", type=int, default=8,
                        help="ids leased per call (default 8, a worker's default WORKER_PREFETCH)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args(argv)

    from bench.faultapp.cluster import LocalCluster

    cluster = LocalCluster(int(os.environ.get("JOBQUEUE_BENCH_CLUSTER_PORT", "7100")))
    cluster.start()
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{cluster.port + i}" for i in range(3))
    try:
        configure(url)
        from jobqueue import engine

        layouts = {"1 master": topics_on(url, args.processes, spread=False),
                   "3 masters": topics_on(url, args.processes, spread=True)}
        rates: dict[str, list[float]] = {name: [] for name in layouts}
        busy: dict[str, list[float]] = {name: [] for name in layouts}
        cost: dict[str, list[float]] = {name: [] for name in layouts}
        for run in range(args.runs):
            for name, topics in layouts.items():  # interleaved, so drift hits both alike
                engine.get_redis().flushall(target_nodes="primaries")
                rate, share, micros = run_layout(url, topics, args.jobs, args.batch)
                rates[name].append(rate)
                busy[name].append(share)
                cost[name].append(micros)
                print(f"run {run + 1}: {name}: {rate:,.0f} jobs/s, busiest master {share:.0%} of a core, "
                      f"{micros:.1f} µs of master CPU per job", file=sys.stderr, flush=True)
        one, three = (statistics.median(rates[name]) for name in layouts)
        busy_one, busy_three = (statistics.median(busy[name]) for name in layouts)
        cost_one, cost_three = (statistics.median(cost[name]) for name in layouts)
        label = (f"Redis Cluster, {args.processes} topics x {args.jobs:,} jobs, one client process per topic, "
                 f"pop + acks_and_pop, {args.batch} ids per call (jobs/s): topics on 1 master → spread over 3")
        print("| workload | jobs/s | busiest master's share of a core | cores |")
        print("|---|---|---|---|")
        print(f"| {label} | {one:,.0f} → {three:,.0f} ({three / one:.2f}×) | {busy_one:.0%} → {busy_three:.0%} "
              f"| {os.cpu_count()} |")
        # What one master would carry with its core to itself, from the one-master layout.
        print(f"\nCPU of all masters per job: {cost_one:.1f} µs on 1 master, {cost_three:.1f} µs spread over 3.")
        print(f"\nOne master's ceiling at this pace: {one / busy_one:,.0f} jobs/s (jobs/s ÷ its busy share); "
              f"three masters: {3 * one / busy_one:,.0f} jobs/s, when the clients have cores of their own.")
        print(f"\nEvery run (jobs/s): {rates}")
        print(f"Busiest master's share of a core, every run: {busy}")
    finally:
        if not args.keep:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
