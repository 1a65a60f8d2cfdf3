"""The worker's half of the whole latency floor (see ``workloads.latency_path_floor``).

    python bench/floorworker.py TOPIC

What a worker of a durable queue must do between a push and a handler's start, with no
Python around it: one round trip that waits on the topic's wake list and leases the
next id (``BLPOP`` with the ``ack_pop`` script's call pipelined behind it, sent as
packed bytes, as an idle jobqueue worker does), then one round trip with the prepared
``wait_for_insert`` and ``claim`` statements pipelined (the claim waits for the row's
commit, the push having been sent as its ``INSERT`` was; the job marked running,
committed without waiting for the WAL flush, as a worker's commits are), then the start
time, written to ``common.LATENCY_KEY`` by job id. No topic slot, no handler, no
acknowledgement: the least of each step.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Set once the worker waits on its topic (the measuring side starts then).
READY_KEY = "bench:floorworker:ready"


def main() -> int:
    topic = sys.argv[1]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from bench import common
    from jobqueue.engine import get_redis, topic_keys
    from jobqueue.engine.queue import _ack_pop_call
    from jobqueue.engine.scripts import script
    from jobqueue.transitions import fastsql
    from jobqueue.worker.connections import relax_commit_durability

    relax_commit_durability()
    r, k = get_redis(), topic_keys(topic)
    pop = script(r, "ack_pop")
    keys, args = _ack_pop_call(topic, [], 0, None, None, None)
    pop(keys=keys, args=args, client=r)  # loaded (a pop of none)
    keys, args = _ack_pop_call(topic, [], 1, None, None, None)  # one id, no slot to check
    conn = r.connection_pool.get_connection()
    # Packed once, as the idle worker's wait_and_pop() sends them in one pipeline.
    packed = b"".join(conn.pack_commands([("BLPOP", k.wake, 1), ("EVALSHA", pop.sha, len(keys), *keys, *args)]))
    stamps = common.client()
    with fastsql._cursor(connection) as cursor:
        stamps.set(READY_KEY, "1")
        while True:
            conn.send_packed_command([packed])
            conn.read_response()
            for job_id in conn.read_response():
                started = fastsql._prep(fastsql.Job, "started_at", timezone.now(), connection)
                pk = fastsql._as_uuid(job_id.decode())
                # One write and one answer, as a worker's claim (libpq's own calls).
                fastsql._claim_after_insert(cursor, pk, fastsql._claim_params(pk, "floor", started, connection),
                                            connection)
                stamps.hset(common.LATENCY_KEY, job_id, repr(time.time()))


if __name__ == "__main__":
    sys.exit(main())
