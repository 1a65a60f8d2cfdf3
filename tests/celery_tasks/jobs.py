"""Workers import an app's ``jobs`` module at start-up; this one brings the ``tasks`` module
(a ported Celery ``tasks.py``) along, and hands steps to a Celery fleet."""

from jobqueue import Next, handler
from jobqueue.contrib.celery import CeleryNext

from . import tasks  # noqa: F401 - registers the @shared_task topics


@handler("celery.handover", max_attempts=1)
def hand_over(job):
    """Hand the payload's call to the Celery task ``fleet.record`` on the payload's queue."""
    p = job.payload
    return CeleryNext(
        p.get("task", "fleet.record"),
        args=p.get("args", []),
        kwargs=p.get("kwargs", {}),
        queue=p["queue"],
        countdown=p.get("countdown"),
        priority=p.get("priority"),
    )


@handler("celery.handover.many", max_attempts=1)
def hand_over_many(job):
    """Two Celery steps at once, as a fan-out of ``Next`` items."""
    p = job.payload
    return [CeleryNext("fleet.record", args=[f"{p['key']}-{i}", i], queue=p["queue"]) for i in range(2)]


@handler("chain_to", max_attempts=1)
def chain_to(job):
    """Chain into the payload's topic with a Celery-style payload."""
    return Next(job.payload["topic"], {"args": job.payload["args"], "kwargs": {}})
