"""jobqueue handlers of the benchmark: the same no-op as Celery's and RQ's (``bench.common``)."""

from jobqueue import handler

from .. import common


@handler("noop")
def noop(job):
    """No-op, run in the worker process."""
    common.run_payload(job.payload)


@handler("noop_proc", isolation="process")
def noop_proc(job):
    """No-op, run in a forked child per job."""
    common.run_payload(job.payload)


@handler("latency")
def latency(job):
    """No-op that records when it started, for enqueue-to-start latency."""
    common.run_payload(job.payload)


@handler("scale", concurrency=2)
def scale(job):
    """No-op (or a short sleep standing for I/O) on a topic two workers may serve at once."""
    common.run_payload(job.payload)


@handler("flow_rate", concurrency=4, rate="600/m")
def flow_rate(job):
    """No-op on a topic limited to 600 starts a minute, served by four workers (bench/flow.py)."""
    common.run_payload(job.payload)


@handler("flow_fair", fair=True)
def flow_fair(job):
    """No-op on a topic whose job keys take turns (bench/flow.py)."""
    common.run_payload(job.payload)


@handler("flow_fifo")
def flow_fifo(job):
    """The same no-op without turns between keys: the peer of ``flow_fair``."""
    common.run_payload(job.payload)
