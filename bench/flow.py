"""Flow control under load: the accuracy of a rate limit, and how soon a small key's jobs
start behind a large key's backlog.

    python bench/flow.py                        # 4 workers, 600/m for 60 s; 10,000 + 10 keyed jobs
    python bench/flow.py --seconds 15 --backlog 2000   # a shorter smoke run

Rate: four workers serve the ``flow_rate`` topic (``rate="600/m"``, a burst of 1) with
more jobs queued than the period can start. Reported: starts per second over the run
against the limit (within 5 % is the target), and the largest excess of starts in any
window over what the bucket allows there (burst + window / interval; at most 0 is met).
Start times are the executions' ``started_at``, written by the worker just after its pop,
so a little jitter shows as a fraction of a start.

Fairness: one worker drains ``backlog`` jobs of key A; once it is going, 10 jobs of key
B are enqueued. Reported: seconds from B's enqueue until its last job started, on a topic
whose keys take turns (``fair=True``) and on the same topic without (its peer in the same
run, which serves B only after A's backlog).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the rate run (default 60)")
    parser.add_argument("--workers", type=int, default=4, help="workers on the rate-limited topic (default 4)")
    parser.add_argument("--backlog", type=int, default=10_000, help="key A's jobs in the fairness run (default 10,000)")
    parser.add_argument("--small", type=int, default=10, help="key B's jobs (default 10)")
    parser.add_argument("--only", choices=["rate", "fairness"], help="run one of the two")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reset(topic: str) -> None:
    from jobqueue import engine
    from jobqueue.models import Job

    Job.objects.filter(topic_id=topic).delete()
    engine.get_redis().delete(*engine.topic_keys(topic).all())


def rate_run(seconds: float, workers: int) -> dict[str, float]:
    from bench import procs
    from jobqueue.engine.flow import parse_rate
    from jobqueue.models import Execution, Job, Topic

    topic = "flow_rate"
    reset(topic)
    row = Topic.objects.get(name=topic)
    rate = parse_rate(row.rate)
    assert rate is not None
    per_second = rate.count / rate.period
    n = int(per_second * seconds * 1.3) + 50
    Job.objects.enqueue_many([{"topic": topic, "payload": {}} for _ in range(n)])
    log(f"rate: {workers} workers on {topic} ({row.rate}) for {seconds:.0f} s, {n} jobs queued")
    started = [procs.Proc(f"jobqueue-{i}", procs.jobqueue_worker(topic, burst=False)) for i in range(workers)]
    try:
        procs.wait_for(lambda: Execution.objects.filter(job__topic_id=topic).exists(), 60, "the first start", started)
        time.sleep(seconds + 2)
    finally:
        for proc in started:
            proc.stop()
    rows = Execution.objects.filter(job__topic_id=topic).values_list("started_at", flat=True)
    times = sorted(t.timestamp() for t in rows)
    # Skip the first second (workers still starting up, and the full bucket's burst).
    first = times[0] + 1.0
    window = [t for t in times if first <= t < first + seconds - 1.0]
    measured = len(window) / (seconds - 1.0)
    interval = rate.period / rate.count
    excess = 0.0
    for i in range(len(times)):
        for j in range(i, min(len(times), i + 200)):
            excess = max(excess, (j - i + 1) - (rate.burst + (times[j] - times[i]) / interval))
    distinct_workers = Execution.objects.filter(job__topic_id=topic).values("worker_id").distinct().count()
    return {"limit": per_second, "measured": measured, "error": measured / per_second - 1.0, "excess": excess,
            "starts": len(times), "workers": distinct_workers}


def fairness_run(topic: str, backlog: int, small: int) -> float | None:
    from bench import procs
    from jobqueue.models import Execution, Job

    reset(topic)
    Job.objects.enqueue_many([{"topic": topic, "payload": {}, "key": "A"} for _ in range(backlog)])
    worker = procs.Proc("jobqueue", procs.jobqueue_worker(topic, burst=True))
    try:
        procs.wait_for(lambda: Execution.objects.filter(job__topic_id=topic).count() >= 100, 120, "A's first jobs",
                       [worker])
        enqueued = time.time()
        small_ids = [Job.objects.enqueue(topic, {}, key="B").pk for _ in range(small)]
        procs.wait_for(lambda: Execution.objects.filter(job_id__in=small_ids).count() >= small, 600,
                       "B's jobs", [worker], interval=0.05)
        last = max(Execution.objects.filter(job_id__in=small_ids).values_list("started_at", flat=True)).timestamp()
        a_before = Execution.objects.filter(job__topic_id=topic, job__key="A",
                                            started_at__gte=dt.datetime.fromtimestamp(enqueued, dt.UTC),
                                            started_at__lte=dt.datetime.fromtimestamp(last, dt.UTC)).count()
        log(f"fairness: {topic}: B's last job started {last - enqueued:.2f} s after B's enqueue; "
            f"{a_before} of A's jobs started in between")
        return last - enqueued
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    from bench.run import setup_django

    setup_django()
    from jobqueue.models import Topic

    Topic.objects.sync_registered()
    lines = ["| flow workload | result | target | met? |", "| --- | ---: | --- | --- |"]
    if args.only in (None, "rate"):
        r = rate_run(args.seconds, args.workers)
        lines.append(f"| rate: {r['workers']} workers, {r['limit'] * 60:.0f}/m, {args.seconds:.0f} s (starts/s) "
                     f"| {r['measured']:.2f} ({r['error'] * 100:+.1f} %) | within ±5 % of {r['limit']:.2f} "
                     f"| {'yes' if abs(r['error']) <= 0.05 else '**no**'} |")
        lines.append(f"| rate: largest excess over the bucket in any window (starts) | {r['excess']:.2f} "
                     f"| ≤ 0 (+ start-time jitter < 1) | {'yes' if r['excess'] < 1 else '**no**'} |")
    if args.only in (None, "fairness"):
        fair = fairness_run("flow_fair", args.backlog, args.small)
        fifo = fairness_run("flow_fifo", args.backlog, args.small)
        ratio = f"{fifo / fair:.0f}× sooner" if fair and fifo else "?"
        lines.append(f"| fairness: {args.small} jobs of key B behind {args.backlog:,} of key A, turns between keys "
                     f"(s until B's last start) | {fair:.2f} | bounded, not behind A's backlog | {ratio} than FIFO |")
        lines.append(f"| fairness peer: the same topic without turns (FIFO) | {fifo:.2f} | — | — |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
