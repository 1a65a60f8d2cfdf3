"""``@task`` functions used by the backend and API tests."""

import asyncio
import time

from jobqueue.contrib.tasks.compat import task


class CustomError(Exception):
    pass


@task
def add(a, b):
    return a + b


@task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task(queue_name="emails")
def send_mail(to):
    return f"sent to {to}"


@task
def fail(message):
    raise CustomError(message)


@task
def fail_builtin():
    raise ValueError("bad value")


@task(takes_context=True)
def with_context(context, x):
    return {"attempt": context.attempt, "id": context.task_result.id, "x": x}


@task(takes_context=True, max_attempts=3)
def flaky(context, succeed_on):
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} failed")
    return context.attempt


@task(takes_context=True, timeout=120)
def naps_on_first_attempt(context, seconds):
    # Long enough on its first attempt for a worker to be stopped in the middle of it.
    if context.attempt == 1:
        time.sleep(seconds)
    return context.attempt


@task
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task(timeout=1)
def slow(seconds):
    time.sleep(seconds)
    return "finished"


@task
def returns_object():
    return object()


@task
def returns_next_topic():
    # Looks like a chaining instruction to a handler; a task's return value is only data.
    return {"next_topic": "echo", "data": {"x": 1}}


def plain_function():
    return "not a task"
