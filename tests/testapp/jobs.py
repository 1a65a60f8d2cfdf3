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


@handler("progress_many")
def progress_many(job):
    """Reports progress faster than the throttle allows; the last report must still land."""
    for i in range(1, 40):
        job.set_progress(i, f"step {i}")
    job.set_progress(42, "last words")
    if job.payload.get("fail"):
        raise RuntimeError("failed after reporting progress")
    return "ok"


@handler("inspect", max_attempts=1)
def inspect_job(job):
    """Returns what a handler can see of its job."""
    import os

    if job.data_dir:
        with open(os.path.join(job.data_dir, "note.txt"), "w") as fh:
            fh.write("written by the handler")
    return {"payload": job.payload, "attempt": job.attempt, "data_dir": job.data_dir, "pid": os.getpid()}


@handler("crashable", max_attempts=2, timeout=60)
def crashable(job):
    """Sleeps on its first attempt (long enough to be killed), returns at once after."""
    import time

    if job.attempt == 1:
        time.sleep(job.payload.get("seconds", 30))
    return {"attempt": job.attempt}


@handler("chain_prio")
def chain_prio(job):
    return Next("echo", {"from": "chain_prio"}, priority=7)


@handler("chain_bad")
def chain_bad(job):
    """Chains into a topic that does not exist, after one that does."""
    return [Next("echo", {"i": 1}), Next("no-such-topic", {})]


@handler("badresult", max_attempts=1)
def badresult(job):
    return {"not json": {1, 2}}


#: Characters a database cannot store as they are: NUL (PostgreSQL) and a lone surrogate (any).
ODD_CHARACTERS = {"nul": "\x00", "surrogate": "\ud800"}


class Unprintable(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self):
        raise RuntimeError("no text for this exception")


@handler("unstorable", max_attempts=1)
def unstorable(job):
    """Puts the character named by payload["odd"] (see ``ODD_CHARACTERS``) where payload["where"]
    says: its error, progress, result, stdout or stderr; "unprintable" raises an exception
    whose ``str()`` fails."""
    import sys

    where = job.payload["where"]
    if where == "unprintable":
        raise Unprintable()
    text = f"before{ODD_CHARACTERS[job.payload['odd']]}after"
    if where == "error":
        raise ValueError(text)
    if where == "progress":
        job.set_progress(50, text, stage=text)
    elif where == "stdout":
        print(text)
    elif where == "stderr":
        print(text, file=sys.stderr)
    elif where == "result":
        return {"text": text, text: [text]}
    return "done"


@handler("deep", max_attempts=1)
def deep(job):
    """Returns a list nested deeper than JSON encoding can go."""
    result: list = []
    for _ in range(100_000):
        result = [result]
    return result


@handler("exits", max_attempts=2, retry_backoff=0.05, timeout=30)
def exits(job):
    """On its first attempt, prints payload["say"] then leaves as payload["how"] says:
    ``sys.exit(code)``, ``os._exit(code)``, SIGKILL itself, SIGINT itself, or raise a
    ``BaseException`` by name. Returns after."""
    import os
    import signal
    import sys
    import time

    if job.attempt > 1:
        return {"attempt": job.attempt}
    how = job.payload["how"]
    print(job.payload.get("say", "leaving now"), flush=True)
    if how == "sys.exit":
        sys.exit(job.payload.get("code"))
    if how == "os._exit":
        os._exit(job.payload["code"])
    if how in ("SIGKILL", "SIGINT"):
        os.kill(os.getpid(), getattr(signal, how))
        time.sleep(10)
        return "the signal did not stop it"
    raise {"KeyboardInterrupt": KeyboardInterrupt, "GeneratorExit": GeneratorExit}[how]()


@handler("overrun", timeout=1, max_attempts=2, retry_backoff=0.05)
def overrun(job):
    """On its first attempt, catches its ``JobTimeout`` and goes on for payload["seconds"],
    or with payload["until_recorded"] until the attempt is recorded without it. On time after."""
    import time

    from jobqueue.models import Job
    from jobqueue.worker.runner import JobTimeout

    if job.attempt > 1:
        return "on time"
    deadline = time.monotonic() + job.payload.get("seconds", 60)
    timed_out = False
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except JobTimeout:
            timed_out = True  # the point: this handler does not stop at its timeout
        # Queried only once the alarm went off, so that it never interrupts a query.
        if timed_out and job.payload.get("until_recorded") and not Job.objects.filter(
                pk=job.pk, status="running").exists():
            break
    return "finished late"
