"""Many clients on one topic at once: every id is delivered exactly once."""

from __future__ import annotations

import multiprocessing
import random
import threading
import uuid
from collections import Counter

from django.conf import settings as django_settings
from django.test.utils import override_settings

from jobqueue import engine

POPPERS = 8
JOBS = 5000
T0 = 1_700_000_000_000


def _pop_until_empty(url: str, topic: str, barrier, results) -> None:
    """Runs in a forked child: its own client from the URL, batches of random size."""
    engine.reset_clients()
    popped: list[str] = []
    acked: list[str] = []
    rng = random.Random()
    with override_settings(JOBQUEUE={**django_settings.JOBQUEUE, "REDIS_URL": url}):
        barrier.wait(timeout=30)
        while True:
            batch = engine.pop(topic, count=rng.randint(1, 50), lease_seconds=300)
            if not batch:
                break
            popped.extend(batch)
            for job_id in batch[::7]:
                assert engine.ack(topic, job_id)
                acked.append(job_id)
    results.put((popped, acked))


def test_many_processes_popping_one_topic_get_every_id_exactly_once():
    ids = [str(uuid.uuid4()) for _ in range(JOBS)]
    for start in range(0, JOBS, 1000):
        engine.push("busy", [(i, random.randint(-3, 3), None) for i in ids[start : start + 1000]])
    assert engine.depths("busy")["queued"] == JOBS

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(POPPERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_pop_until_empty, args=(django_settings.REDIS_URL, "busy", barrier, results))
        for _ in range(POPPERS)
    ]
    for proc in procs:
        proc.start()
    # Read before joining: a child blocks on exit until its results are consumed.
    per_process, acks = zip(*[results.get(timeout=60) for _ in procs], strict=True)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    delivered = Counter(i for popped in per_process for i in popped)
    assert sum(delivered.values()) == JOBS  # nothing delivered twice
    assert set(delivered) == set(ids)  # nothing lost
    assert sum(1 for popped in per_process if popped) >= 2  # the work really was shared
    depths = engine.depths("busy")
    assert depths["queued"] == 0
    # Every id not acknowledged is still leased.
    acked = {i for batch in acks for i in batch}
    leased = {i.decode() for i in engine.get_redis().zrange(engine.TopicKeys("busy").leases, 0, -1)}
    assert acked and leased == set(ids) - acked


def test_promote_due_from_many_threads_promotes_each_id_once():
    ids = [str(uuid.uuid4()) for _ in range(600)]
    engine.schedule("later", [(i, T0 / 1000 - 60 + n % 50, 0, None) for n, i in enumerate(ids)])
    barrier = threading.Barrier(8)
    promoted: list[list[str]] = [[] for _ in range(8)]

    def promote(slot: int) -> None:
        barrier.wait(timeout=30)
        while batch := engine.promote_due("later", limit=25, now_ms=T0):
            promoted[slot].extend(batch)

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    counts = Counter(i for batch in promoted for i in batch)
    assert sum(counts.values()) == len(ids)
    assert set(counts) == set(ids)
    assert engine.depths("later") == {"queued": len(ids), "leased": 0, "scheduled": 0}


def test_ack_and_pop_from_many_threads_delivers_each_id_once():
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    engine.push("steady", [(i, 0, None) for i in ids])
    barrier = threading.Barrier(6)
    seen: list[list[str]] = [[] for _ in range(6)]

    def work(slot: int) -> None:
        barrier.wait(timeout=30)
        batch = engine.pop("steady", lease_seconds=300)
        while batch:
            seen[slot].extend(batch)
            batch = engine.ack_and_pop("steady", batch[0], None, count=1, lease_seconds=300)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    counts = Counter(i for batch in seen for i in batch)
    assert sum(counts.values()) == len(ids) and set(counts) == set(ids)
    assert engine.depths("steady") == {"queued": 0, "leased": 0, "scheduled": 0}
