"""``jobworker`` as a real subprocess: options, topic slots, idle waiting, signals,
crash recovery, cancelling running jobs and the ``--processes`` supervisor.

Workers run with a 2 s lease, a 0.5 s heartbeat and a 2 s slot TTL (see
``tests/workerutil.py``), so recovering from a killed worker takes seconds.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from urllib.parse import urlparse

import pytest
from django.conf import settings

from jobqueue import engine
from jobqueue.engine import TopicLock
from jobqueue.engine.connection import is_cluster
from jobqueue.models import Job, Topic
from tests.workerutil import WorkerPool, children_of, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(transactional_db, tmp_path):
    pool = WorkerPool(tmp_path)
    yield pool
    pool.close()


def status_of(job: Job) -> str:
    return Job.objects.filter(pk=job.pk).values_list("status", flat=True).first()


def wait_status(job: Job, status: str, timeout: float = 20.0, worker=None) -> None:
    def reached() -> bool:
        return status_of(job) == status

    try:
        wait_for(reached, timeout, f"job {job.pk} to be {status}")
    except AssertionError as exc:
        log = f"\n--- worker log ---\n{worker.output()}" if worker is not None else ""
        raise AssertionError(f"{exc} (it is {status_of(job)}){log}") from None


def live(worker_id: str) -> dict | None:
    return next((w for w in engine.live_workers() if w["id"] == worker_id), None)


def holder_ids(topic: str) -> list[str]:
    return [h.worker_id for h in TopicLock.holders(topic)]


# -- options --------------------------------------------------------------------------


def test_burst_worker_processes_its_topics_and_exits(workers):
    job = Job.objects.enqueue("echo", {"hello": "world"})
    other = Job.objects.enqueue("other")
    worker = workers.start("--topics", "echo", "--burst", "--worker-id", "burst-1")
    assert worker.wait() == 0, worker.output()
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result == {"hello": "world"}
    execution = job.executions.get()
    assert execution.worker_id == "burst-1"
    assert execution.pid == worker.pid
    assert status_of(other) == "queued"
    assert "serving topics: echo" in worker.output()
    assert holder_ids("echo") == [] and live("burst-1") is None


def test_max_jobs_and_log_level(workers):
    jobs = [Job.objects.enqueue("echo", {"i": i}) for i in range(3)]
    worker = workers.start("--topics", "echo", "--max-jobs", "2", "--log-level", "warning")
    assert worker.wait() == 0, worker.output()
    statuses = sorted(status_of(j) for j in jobs)
    assert statuses == ["queued", "succeeded", "succeeded"]
    assert "serving topics" not in worker.output()  # an INFO line


# -- slots and the live-worker registry -----------------------------------------------


def test_topic_with_concurrency_one_runs_on_one_worker_at_a_time(workers):
    a = workers.start("--topics", "echo", "--worker-id", "sem-a")
    wait_for(lambda: holder_ids("echo") == ["sem-a"], 15, "sem-a to hold the echo slot")
    b = workers.start("--topics", "echo", "--worker-id", "sem-b", "--log-level", "DEBUG")
    b.wait_for_log("echo is at its concurrency limit")
    # The registry is written by the heartbeat, so it may lag the slots by one beat.
    info_a = wait_for(lambda: (i := live("sem-a")) and i["topics"] and i, 5, "sem-a registered with its slot")
    info_b = wait_for(lambda: live("sem-b"), 5, "sem-b in the registry")
    assert info_a["pid"] == a.pid and info_b["pid"] == b.pid
    assert info_a["host"] == socket.gethostname()
    assert info_a["topics"] == ["echo"] and info_b["topics"] == []
    assert info_b["wanted"] == ["echo"]
    assert holder_ids("echo") == ["sem-a"]

    a.signal(signal.SIGTERM)
    assert a.wait() == 0, a.output()
    wait_for(lambda: holder_ids("echo") == ["sem-b"], 15, "sem-b to take over the slot")
    job = Job.objects.enqueue("echo", {"after": "takeover"})
    wait_status(job, "succeeded", worker=b)
    assert job.executions.get().worker_id == "sem-b"


def _redis_commands_during(seconds: float, topic: str = "echo") -> list[str]:
    """Commands run on the test Redis database during ``seconds``, seen through MONITOR
    (on a cluster, on the master of ``topic``'s slot)."""
    client = engine.get_redis()
    if is_cluster(client):
        node = client.get_node_from_key(engine.topic_keys(topic).queue)
        address, db = (node.host, node.port), "0"
    else:
        url = urlparse(settings.REDIS_URL)
        db = (url.path or "/0").lstrip("/") or "0"
        address = (url.hostname or "127.0.0.1", url.port or 6379)
    seen: list[str] = []
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"MONITOR\r\n")
        buffer = b""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if ready:
                buffer += sock.recv(65536)
        for line in buffer.decode(errors="replace").splitlines():
            if line.startswith("+") and f"[{db} " in line:
                seen.append(line)
    return seen


def test_idle_worker_waits_without_busy_polling(workers):
    worker = workers.start("--topics", "echo", "--worker-id", "idle-1")
    wait_for(lambda: holder_ids("echo") == ["idle-1"], 15, "the worker to take its slot")
    time.sleep(0.5)  # past start-up
    commands = _redis_commands_during(2.0)
    # A few commands a second (pop, a blocking wait, maintenance, heartbeat), not a spin.
    assert 0 < len(commands) < 100, commands
    assert any("BLPOP" in c.upper() for c in commands)
    job = Job.objects.enqueue("echo", {"wake": "up"})
    wait_status(job, "succeeded", worker=worker)


# -- signals --------------------------------------------------------------------------


def test_sigterm_finishes_the_current_job_and_releases_the_slot(workers):
    job = Job.objects.enqueue("sleepy", {"seconds": 1.5}, timeout=30)
    worker = workers.start("--topics", "sleepy", "--worker-id", "term-1")
    wait_status(job, "running", worker=worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result == "slept"
    assert job.executions.get().outcome == "succeeded"
    assert holder_ids("sleepy") == []
    assert live("term-1") is None
    assert engine.depths("sleepy") == {"queued": 0, "leased": 0, "scheduled": 0}


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_second_sigterm_aborts_the_current_job(workers, isolation):
    job = Job.objects.enqueue("sleepy", {"seconds": 60}, timeout=120)
    worker = workers.start("--topics", "sleepy", "--isolation", isolation)
    wait_status(job, "running", worker=worker)
    worker.signal(signal.SIGTERM)
    worker.wait_for_log("finishing the current job")
    worker.signal(signal.SIGTERM)
    worker.wait()
    job.refresh_from_db()
    assert job.status == "queued"
    assert job.attempts == 0  # an aborted attempt does not count
    execution = job.executions.get()
    assert execution.outcome == "aborted"
    assert engine.queue_ids("sleepy") == [str(job.pk)]
    assert holder_ids("sleepy") == []


def test_handlers_leaving_with_base_exceptions_do_not_stop_the_worker(workers):
    """``sys.exit()`` and ``KeyboardInterrupt`` from a handler fail its attempt; the
    worker's own signals still stop it."""
    leaving = [Job.objects.enqueue("exits", {"how": how, "code": 0}) for how in ("sys.exit", "KeyboardInterrupt")]
    worker = workers.start("--topics", "exits")
    for job in leaving:
        wait_status(job, "succeeded", worker=worker)
    errors = [job.executions.get(attempt=1).error for job in leaving]
    assert errors == ["SystemExit: 0", "KeyboardInterrupt"]
    assert worker.proc.poll() is None, worker.output()
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0, worker.output()
    assert holder_ids("exits") == []


def test_handler_ignoring_its_timeout_is_abandoned_and_its_slot_given_back(workers):
    job = Job.objects.enqueue("overrun", {"seconds": 120})
    worker = workers.start("--topics", "overrun", "--worker-id", "overrun-1")
    wait_status(job, "running", worker=worker)
    # Past its 1 s timeout and the grace after it, the worker records the attempt and exits.
    assert worker.wait(30) == 1, worker.output()
    assert "abandoning it" in worker.output()
    first = job.executions.get(attempt=1)
    assert (first.outcome, first.worker_id) == ("timeout", "overrun-1")
    assert "abandoned" in first.error
    assert holder_ids("overrun") == [] and live("overrun-1") is None
    assert status_of(job) == "scheduled"
    retry = workers.start("--topics", "overrun", "--burst")
    assert retry.wait() == 0, retry.output()
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts) == ("succeeded", "on time", 2)


# -- crash recovery -------------------------------------------------------------------


def test_killed_worker_job_is_recovered_by_another_worker(workers):
    job = Job.objects.enqueue("crashable", {"seconds": 60})
    a = workers.start("--topics", "crashable", "--worker-id", "doomed")
    wait_status(job, "running", worker=a)
    a.kill()
    assert status_of(job) == "running"
    # The dead worker's slot frees itself when its TTL runs out.
    wait_for(lambda: "doomed" not in holder_ids("crashable"), 10, "the dead worker's slot to expire")
    b = workers.start("--topics", "crashable", "--worker-id", "rescuer")
    wait_status(job, "succeeded", worker=b)
    job.refresh_from_db()
    assert job.attempts == 2 and job.result == {"attempt": 2}
    lost, ok = job.executions.order_by("attempt")
    assert (lost.attempt, lost.outcome, lost.worker_id) == (1, "lost", "doomed")
    assert lost.finished_at is not None and "lease expired" in lost.error
    assert (ok.attempt, ok.outcome, ok.worker_id) == (2, "succeeded", "rescuer")
    assert not Job.objects.filter(status="running").exists()


def test_killed_worker_job_without_attempts_left_fails(workers):
    job = Job.objects.enqueue("crashable", {"seconds": 60}, max_attempts=1)
    a = workers.start("--topics", "crashable")
    wait_status(job, "running", worker=a)
    a.kill()
    b = workers.start("--topics", "crashable")
    wait_status(job, "failed", worker=b)
    job.refresh_from_db()
    assert "lost" in job.error
    assert job.executions.get().outcome == "lost"
    assert not Job.objects.filter(status="running").exists()
    # The failure commits first; the lease is acknowledged in Redis right after.
    wait_for(lambda: engine.depths("crashable") == {"queued": 0, "leased": 0, "scheduled": 0},
             message="the lost job's lease to be acknowledged")


def test_scheduled_jobs_run_once_with_several_workers(workers):
    Topic.objects.resolve("echo")
    Topic.objects.filter(name="echo").update(concurrency=2, operator_overrides=["concurrency"])
    jobs = [Job.objects.enqueue("echo", {"i": i}, delay=1) for i in range(6)]
    workers.start("--topics", "echo")
    workers.start("--topics", "echo")
    for job in jobs:
        wait_status(job, "succeeded")
    counts = [job.executions.count() for job in jobs]
    assert counts == [1] * 6


# -- cancelling running jobs ----------------------------------------------------------


def test_cancel_running_process_job_kills_the_child(workers):
    job = Job.objects.enqueue("sleepy", {"seconds": 60}, timeout=120)
    worker = workers.start("--topics", "sleepy", "--isolation", "process")
    wait_status(job, "running", worker=worker)
    assert job.cancel() is True
    wait_status(job, "cancelled", worker=worker)
    execution = job.executions.get()
    assert execution.outcome == "cancelled"
    assert execution.exit_code == -signal.SIGKILL
    # The worker lives on and takes the next job.
    nxt = Job.objects.enqueue("sleepy", {"seconds": 0}, timeout=30)
    wait_status(nxt, "succeeded", worker=worker)


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_cancel_running_job_is_seen_by_should_abort(workers, isolation):
    """The handler returns as soon as should_abort() is true: the job still ends cancelled."""
    job = Job.objects.enqueue("sleepy", {"seconds": 60, "cooperative": True}, timeout=120)
    worker = workers.start("--topics", "sleepy", "--isolation", isolation)
    wait_status(job, "running", worker=worker)
    job.cancel()
    wait_status(job, "cancelled", worker=worker)
    execution = job.executions.get()
    assert execution.outcome == "cancelled"
    assert execution.duration < 30
    # The cancellation commits first; the lease is acknowledged in Redis right after.
    wait_for(lambda: engine.depths("sleepy")["leased"] == 0, message="the cancelled job's lease to be acknowledged")


# -- the supervisor -------------------------------------------------------------------


def test_supervisor_restarts_a_child_that_dies(workers):
    sup = workers.start("--topics", "echo", "--processes", "2", "--worker-id", "sup")

    def both() -> dict | None:
        found = {w: live(w) for w in ("sup.0", "sup.1")}
        return {w: info["pid"] for w, info in found.items()} if all(found.values()) else None

    first = wait_for(both, 20, "both worker processes to register")
    assert set(first.values()) == set(children_of(sup.pid))
    os.kill(first["sup.0"], signal.SIGKILL)
    replaced = wait_for(lambda: (info := live("sup.0")) and info["pid"] != first["sup.0"] and info["pid"],
                        20, "a new worker process to take over")
    assert replaced in children_of(sup.pid)
    assert live("sup.1")["pid"] == first["sup.1"]
    job = Job.objects.enqueue("echo", {"after": "restart"})
    wait_status(job, "succeeded", worker=sup)

    sup.signal(signal.SIGTERM)
    assert sup.wait() == 0, sup.output()
    assert children_of(sup.pid) == []
    assert holder_ids("echo") == []
