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
