"""Does the Redis side of jobqueue grow with the shards of a Redis Cluster?

    python bench/cluster_scaling.py                     # 6 topics x 3,000 jobs, 6 processes, 3 runs
    python bench/cluster_scaling.py --jobs 20000 --processes 6 --runs 5

One local cluster of 3 masters and 3 replicas (scripts/redis-cluster.sh on ports
``JOBQUEUE_BENCH_CLUSTER_PORT``..+5, default 7100; stopped at the end) holds both layouts,
measured in the same run, one after the other: the topics all on **one master**, and the
same number of topics spread over **all three masters**. Each client process owns one
topic: it pushes its jobs (1,000 ids per call, untimed), then drains them through the
engine the way a worker's loop does (``pop``, then one ``ack_and_pop`` per job: one Lua
call per job). No database: this isolates the Redis side, which is what a shard bounds.
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


def drain(url: str, topic: str, jobs: int, start: float, out: multiprocessing.Queue) -> None:
    configure(url)
    from jobqueue import engine

    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    for i in range(0, jobs, 1000):
        engine.push(topic, [(job, 0, None) for job in ids[i : i + 1000]])
    while time.time() < start:  # every process starts draining at the same moment
        time.sleep(0.001)
    began = time.time()
    done = 0
    popped = engine.pop(topic, 1)
    while popped:
        done += 1
        popped = engine.ack_and_pop(topic, popped[0])
    out.put((began, time.time(), done))


def run_layout(url: str, topics: list[str], jobs: int) -> float:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    start = time.time() + 1.0 + 0.2 * len(topics)  # past every process's pushes
    procs = [ctx.Process(target=drain, args=(url, t, jobs, start, out)) for t in topics]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    total = sum(done for _, _, done in results)
    if total != jobs * len(topics):
        raise RuntimeError(f"drained {total} jobs, expected {jobs * len(topics)}")
    return total / (max(end for _, end, _ in results) - min(began for began, _, _ in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per topic (default 3,000)")
    parser.add_argument("--processes", type=int, default=6, help="topics, one client process each (default 6)")
    parser.add_argument("--runs", type=int, default=3, help="runs per layout, median reported (default 3)")
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
        for run in range(args.runs):
            for name, topics in layouts.items():  # interleaved, so drift hits both alike
                engine.get_redis().flushall(target_nodes="primaries")
                rates[name].append(run_layout(url, topics, args.jobs))
                print(f"run {run + 1}: {name}: {rates[name][-1]:,.0f} jobs/s", file=sys.stderr, flush=True)
        one, three = (statistics.median(rates[name]) for name in layouts)
        label = (f"Redis Cluster, {args.processes} topics x {args.jobs:,} jobs, one client process per topic, "
                 "pop + ack_and_pop (jobs/s): topics on 1 master → spread over 3")
        print("| workload | jobs/s | cores |")
        print("|---|---|---|")
        print(f"| {label} | {one:,.0f} → {three:,.0f} ({three / one:.2f}×) | {os.cpu_count()} |")
        print(f"\nEvery run (jobs/s): {rates}")
    finally:
        if not args.keep:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
