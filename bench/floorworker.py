"""The worker's half of the whole latency floor (see ``workloads.latency_path_floor``).

    python bench/floorworker.py TOPIC

What a worker of a durable queue must do between a push and a handler's start, with no
Python around it: one round trip that waits on the topic's wake list and leases the
next id (``BLPOP`` with the ``ack_pop`` script's call pipelined behind it, sent as
packed bytes, as an idle jobqueue worker does), then the prepared ``claim`` statement
(the job marked running, committed without waiting for the WAL flush, as a worker's
commits are), then the start time, written to ``common.LATENCY_KEY`` by job id. No
topic slot, no handler, no acknowledgement: the least of each step.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Set once the worker waits on its topic (the measuring side starts then).
READY_KEY = "bench:floorworker:ready"


def _bulk(part: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(part), part)


def _command(*parts: bytes) -> bytes:
    return b"*%d\r\n%s" % (len(parts), b"".join(_bulk(p) for p in parts))


def main() -> int:
    topic = sys.argv[1]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from bench import common
    from jobqueue.engine import get_redis, topic_keys
    from jobqueue.engine.scripts import script
    from jobqueue.transitions import fastsql
    from jobqueue.worker.connections import relax_commit_durability

    relax_commit_durability()
    r, k = get_redis(), topic_keys(topic)
    pop = script(r, "ack_pop")
    keys = [k.queue, k.leases, k.paused, k.entities, k.abort, k.lock, k.metrics]
    pop(keys=keys, args=[60, 0, "", ""], client=r)  # loaded
    wait = _command(b"BLPOP", k.wake.encode(), b"1")
    lease = _command(b"EVALSHA", pop.sha.encode(), b"7", *(key.encode() for key in keys), b"60", b"1", b"", b"")
    conn = r.connection_pool.get_connection()
    claim = fastsql.statement("claim", connection.alias)
    stamps = common.client()
    with fastsql._cursor(connection) as cursor:
        stamps.set(READY_KEY, "1")
        while True:
            conn.send_packed_command([wait + lease])
            conn.read_response()
            for job_id in conn.read_response():
                started = fastsql._prep(fastsql.Job, "started_at", timezone.now(), connection)
                cursor.execute(claim, fastsql._claim_params(job_id.decode(), "floor", started, connection))
                cursor.fetchone()
                stamps.hset(common.LATENCY_KEY, job_id, repr(time.time()))


if __name__ == "__main__":
    sys.exit(main())
