"""The Celery bridge killed with SIGKILL mid-stream, on RabbitMQ and on Redis.

A Celery app publishes N messages; ``manage.py jobbridge celery`` runs as a subprocess
and is SIGKILLed a few times while it bridges them, restarted each time; workers run
the jobs meanwhile. Every message must become exactly one job (its task id is the
job's id), and every job must run. RabbitMQ is the machine's (``JOBQUEUE_FAULTS_AMQP_URL``,
a queue of the scenario's own, deleted afterwards); the Redis broker is a database of
the lab's own Redis.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import uuid
from typing import Any

from . import analysis
from .lab import ROOT, Lab, poll
from .scenarios import Result, start_workers, stop_workers, tally, wait_all

AMQP_URL = os.environ.get("JOBQUEUE_FAULTS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: The Celery task the messages name, and the topic it maps to.
TASK, TOPIC = "faults.work", "work"
#: Seconds before the Redis transport gives back what a killed bridge held.
VISIBILITY_SECONDS = 2


class Bridge:
    """One ``jobbridge celery`` process, in its own process group."""

    def __init__(self, lab: Lab, name: str, url: str, queue: str, batch: int):
        self.log_path = lab.run_dir / f"bridge-{name}.log"
        argv = [sys.executable, "-m", "django", "jobbridge", "celery", "--broker", url, "--queue", queue,
                "--map", f"{TASK}={TOPIC}", "--batch", str(batch), "--visibility-timeout", str(VISIBILITY_SECONDS),
                "--settings=bench.faults_settings"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=lab.child_env(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        os.killpg(self.proc.pid, 9)
        self.proc.wait()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the bridge says it is bridging: its stop signals are installed then
        (a SIGTERM during Django's start-up would kill it as any process, exit -15)."""
        return poll(lambda: "Bridging Celery queue" in self.output() or self.proc.poll() is not None, timeout, 0.05)

    def stop(self, timeout: float = 30) -> int | None:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None


def _broker(lab: Lab, transport: str) -> str:
    return AMQP_URL if transport == "amqp" else re.sub(r"/\d+$", "/1", lab.redis.url)


def _publish(url: str, queue: str, count: int) -> list[str]:
    from celery import Celery

    app = Celery(f"faults-{queue}", broker=url, set_as_current=False)
    app.conf.update(task_default_queue=queue, task_ignore_result=True, broker_connection_retry_on_startup=True)
    ids = []
    with app.producer_or_acquire() as producer:
        for i in range(count):
            ids.append(app.send_task(TASK, args=[i], kwargs={"n": i}, producer=producer).id)
    app.close()
    return ids


def _leftovers(url: str, queue: str, transport: str) -> dict[str, int]:
    """Messages still in the queue (and, on Redis, held unacknowledged); the queue is deleted."""
    from kombu import Connection, Exchange, Queue

    q = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    with Connection(url) as conn:
        channel = conn.channel()
        bound = q(channel)
        left = {"waiting": bound.queue_declare().message_count}
        if transport == "redis":
            left["unacked"] = channel.client.hlen("unacked")
        bound.delete()
        bound.exchange.delete()
    return left


def bridge_kill9(lab: Lab, p: dict[str, Any], size: str, transport: str) -> Result:
    from jobqueue.models import Job

    label = "RabbitMQ" if transport == "amqp" else "Redis"
    result = Result(f"Celery bridge kill -9 ({label})", size, "")
    lab.reset(f"bridge-kill9-{transport}")
    url, queue = _broker(lab, transport), f"jqfaults-{uuid.uuid4().hex[:12]}"
    ids = _publish(url, queue, p["messages"])
    start_workers(lab, f"bk-{transport}", p["workers"], [TOPIC])
    kills, at = 0, []
    for k in range(p["kills"]):
        bridge = Bridge(lab, str(k), url, queue, p["batch"])
        goal = (k + 1) * len(ids) // (p["kills"] + 1)
        # Polled often, and the kill a little later still, so it comes anywhere in a batch
        # (reading, writing or acknowledging) and yet well before a fast bridge is through.
        if not poll(lambda goal=goal: Job.objects.filter(topic_id=TOPIC).count() >= goal, p["timeout"], 0.005):
            result.problems.append(f"bridge {k} wrote too few jobs before its kill:\n{bridge.output()[-1000:]}")
        time.sleep(random.uniform(0, 0.01))
        at.append(Job.objects.filter(topic_id=TOPIC).count())
        bridge.kill9()
        kills += 1
    time.sleep(VISIBILITY_SECONDS + 0.5)  # what the last killed bridge held is now due back (Redis)
    last = Bridge(lab, "last", url, queue, p["batch"])
    if not last.wait_ready(p["timeout"]):
        result.problems.append(f"the last bridge did not start:\n{last.output()[-1000:]}")
    wait_all(lab, result, [TOPIC], len(ids), p["timeout"])
    code = last.stop()
    summary = re.search(r"Bridge stopped: (.*)\.", last.output())
    stop_workers(lab, result)
    rows = Job.objects.filter(topic_id=TOPIC).count()
    extra = Job.objects.filter(topic_id=TOPIC).exclude(pk__in=ids).count()
    runs = analysis.read_runs(lab.run_dir)
    tally(result, ids, runs)
    left = _leftovers(url, queue, transport)
    result.details.update(messages=len(ids), rows=rows, extra_rows=extra, kills=kills, rows_at_kills=at,
                          last_bridge=summary.group(1) if summary else None, leftovers=left)
    if rows != len(ids) or extra:
        result.problems.append(f"{rows} job rows for {len(ids)} messages ({extra} not from a message)")
    if code != 0 or summary is None:
        result.problems.append(f"the last bridge exited with {code}:\n{last.output()[-1000:]}")
    if any(left.values()):
        result.problems.append(f"messages left on the broker: {left}")
    result.injected = (f"{kills} × SIGKILL of the bridge after {', '.join(map(str, at))} jobs, restarted; "
                       f"last bridge: {summary.group(1) if summary else '?'}")
    return result
