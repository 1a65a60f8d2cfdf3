"""Run an RQ worker with Django set up first (what ``django-rq``'s ``rqworker`` does).

    python bench/rqworker.py simple|fork [--burst]

``simple`` is RQ's ``SimpleWorker`` (jobs run in the worker), ``fork`` its default
``Worker`` (a forked work horse per job). The job functions are imported before the
loop starts, so a forked horse does not import them again.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["simple", "fork"])
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    args = parser.parse_args()

    from rq.worker import SimpleWorker, Worker

    from bench import peers

    worker_class = SimpleWorker if args.kind == "simple" else Worker
    connection = peers.rq_connection()
    worker = worker_class([peers.rq_queue(connection)], connection=connection)
    worker.work(burst=args.burst, logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
