"""``manage.py jobbridge celery`` as a real subprocess beside a real ``jobworker``, killed
with SIGKILL mid-stream; its options; the checks of ``JOBQUEUE["CELERY_TASKS"]``."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import CommandError, call_command

from jobqueue.models import Job
from tests.bridgeutil import TASKS, Broker
from tests.workerutil import REPO_ROOT, WorkerPool, child_env, jobqueue_settings, manage_command, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class BridgeProcess:
    """A ``jobbridge celery`` subprocess over the broker's queue; output in a file."""

    def __init__(self, broker: Broker, log: Path, *extra: str):
        maps = [arg for task, topic in TASKS.items() for arg in ("--map", f"{task}={topic}")]
        argv = manage_command("jobbridge", "celery", "--broker", broker.url, "--queue", broker.queue, *maps, *extra)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the bridge did not exit within {timeout}s:\n{self.output()}") from None


def test_delayed_tasks_run_on_a_worker_through_the_bridge_command(broker, tmp_path):
    results = [broker.add.delay(i, twice=i * 2) for i in range(20)]
    bridge = BridgeProcess(broker, tmp_path / "bridge.log")
    pool = WorkerPool(tmp_path)
    try:
        pool.start("--topics", "echo")
        done = lambda: Job.objects.filter(status="succeeded").count() == 20  # noqa: E731
        wait_for(done, 60, "20 succeeded jobs")
        bridge.proc.send_signal(signal.SIGTERM)
        assert bridge.wait() == 0, bridge.output()
    finally:
        pool.close()
    assert "Bridge stopped: 20 jobs created, 0 already there, refused: none." in bridge.output()
    for i, result in enumerate(results):
        job = Job.objects.get(pk=uuid.UUID(result.id))
        assert job.result == {"args": [i], "kwargs": {"twice": i * 2}}
        assert list(job.executions.values_list("outcome", flat=True)) == ["succeeded"]
    assert broker.waiting() == 0


def test_sigkill_mid_stream_loses_no_message_and_duplicates_no_job(broker, tmp_path):
    """Acknowledged only after the commit: whatever a killed bridge had in hand comes back
    from the broker, and the task id finds the job it may already have written."""
    n = 400
    sent = []
    with broker.app.producer_or_acquire() as producer:
        for i in range(n):
            sent.append(broker.add.apply_async((i,), producer=producer).id)
    options = ("--batch", "10", "--batch-seconds", "0.01", "--visibility-timeout", "1")
    kills = 0
    for round_ in range(3):
        bridge = BridgeProcess(broker, tmp_path / f"bridge-{round_}.log", *options)
        before = Job.objects.count()
        wait_for(lambda before=before: Job.objects.count() >= before + 20, 60, "the bridge to write jobs")
        if Job.objects.count() >= n:
            break
        bridge.proc.send_signal(signal.SIGKILL)
        bridge.wait()
        kills += 1
    time.sleep(1.5)  # past the visibility timeout, so the Redis transport gives back what the killed bridge held
    last = BridgeProcess(broker, tmp_path / "bridge-last.log", *options, "--burst")
    assert last.wait(120) == 0, last.output()

    assert kills >= 1
    ids = {str(pk) for pk in Job.objects.values_list("pk", flat=True)}
    assert len(ids) == Job.objects.count() == n  # no message lost, none made twice
    assert ids == set(sent)
    assert broker.waiting() == 0
    if broker.kind == "redis":
        assert broker.unacked() == 0


def test_the_command_refuses_a_task_mapped_to_an_unknown_topic():
    with pytest.raises(CommandError, match="Task 'app.tasks.x' maps to topic 'nowhere': Unknown topic"):
        call_command("jobbridge", "celery", "--broker", "redis://127.0.0.1:1/0", "--map", "app.tasks.x=nowhere")


def test_the_command_needs_a_mapping_and_a_broker(settings):
    with pytest.raises(CommandError, match="No task is mapped to a topic"):
        call_command("jobbridge", "celery", "--broker", "redis://127.0.0.1:1/0")
    with pytest.raises(CommandError, match="--broker"):
        call_command("jobbridge", "celery", "--map", "a=echo")


def test_the_command_checks_its_options():
    argv = manage_command("jobbridge", "celery", "--map", "no-equals-sign")
    done = subprocess.run(argv, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "'no-equals-sign' is not TASK=TOPIC" in done.stderr


# -- checks -----------------------------------------------------------------------------


def bridge_errors() -> dict[str, str]:
    return {m.id: m.msg for m in run_checks() if m.id and m.id.startswith("jobqueue.E30")}


def test_a_good_mapping_passes_the_checks():
    with jobqueue_settings(CELERY_TASKS=TASKS):
        assert bridge_errors() == {}


@pytest.mark.parametrize("mapping, error", [
    (["tests.celery.add"], "jobqueue.E301"),
    ({"tests.celery.add": 3}, "jobqueue.E301"),
    ({"tests.celery.add": "Not A Topic"}, "jobqueue.E302"),
    ({"tests.celery.add": "nowhere"}, "jobqueue.E303"),
])
def test_a_bad_mapping_is_reported(mapping, error):
    with jobqueue_settings(CELERY_TASKS=mapping):
        errors = bridge_errors()
    assert list(errors) == [error]
    assert "CELERY_TASKS" in errors[error]


def test_an_unregistered_topic_passes_when_unregistered_topics_are_allowed():
    with jobqueue_settings(CELERY_TASKS={"tests.celery.add": "nowhere"}, ALLOW_UNREGISTERED_TOPICS=True):
        assert bridge_errors() == {}
