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


@handler("flaky", max_attempts=3, retry_backoff=0.05)
def flaky(job):
    """Fails until the attempt named in the payload."""
    if job.attempt < job.payload.get("succeed_on", 99):
        raise RuntimeError(f"attempt {job.attempt} failed")
    return {"attempt": job.attempt}


@handler("retry", max_attempts=2)
def retry_later(job):
    from jobqueue import Retry

    if job.attempt == 1:
        raise Retry(delay=0.1, reason="not yet")
    return "done"


@handler("sleepy", timeout=1, max_attempts=1)
def sleepy(job):
    """Sleeps for payload["seconds"], checking for a cancel request."""
    import time

    deadline = time.monotonic() + job.payload.get("seconds", 5)
    while time.monotonic() < deadline:
        if job.payload.get("cooperative") and job.should_abort():
            return "stopped early"
        time.sleep(0.05)
    return "slept"


@handler("loud", isolation="process", timeout=10)
def loud(job):
    import sys

    print("hello from the child")
    print("warning!", file=sys.stderr)
    if job.payload.get("fail"):
        raise ValueError("boom")
    return {"pid_differs": True}


@handler("stage1", next_topic="stage2")
def stage1(job):
    return {"n": job.payload.get("n", 0) + 1}


@handler("stage2")
def stage2(job):
    return Next("stage3", {"n": job.payload["n"] + 1})


@handler("stage3")
def stage3(job):
    return {"n": job.payload["n"] + 1}


@handler("fanout")
def fanout(job):
    return [Next("echo", {"i": i}) for i in range(job.payload.get("count", 3))]


@handler("sjq")
def sjq_style(job):
    return {"next_topic": "echo", "data": {"from": "sjq"}}


@handler("progress")
def progress(job):
    job.set_progress(50, "half way", stage="working")
    return "ok"
