"""Handlers used by the test suite."""

from jobqueue import Next, handler


@handler("echo", max_attempts=2, timeout=30)
def echo(job):
    """Return the payload."""
    return job.payload


@handler("other")
def other(job):
    return {"ok": True}


@handler("prio", priority=5)
def prio(job):
    return None
