"""A Celery ``tasks.py`` ported by changing its import."""

from jobqueue.contrib.celery import shared_task


@shared_task
def add(x, y):
    """Add two numbers."""
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task(name="celery-tests.collect")
def collect(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


# Named: tests/test_facts.py starts the apps with topic names of at most 30 characters.
@shared_task(name="celery-tests.pid-and", isolation="process")
def pid_and(value):
    """Runs in a forked child."""
    import os

    return {"value": value, "pid": os.getpid()}


@shared_task(max_retries=0)
def boom(message):
    raise ValueError(message)


@shared_task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, succeed_on):
    """Retries through self.retry() until its attempt ``succeed_on``."""
    if self.request.retries + 1 < succeed_on:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries + 1}"))
    return {"id": self.request.id, "retries": self.request.retries}


@shared_task(name="celery-tests.prioritized", priority=7, time_limit=42, queue="ignored")
def prioritized():
    return "done"
