"""``unlock`` and the argument errors of ``jobworker``."""

from __future__ import annotations

import io
import signal
import subprocess

import pytest
from django.core.management import CommandError, call_command

from jobqueue.engine import TopicLock
from tests.workerutil import REPO_ROOT, child_env, manage_command

pytestmark = pytest.mark.django_db(transaction=True)


def unlock(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("unlock", *args, stdout=out)
    return out.getvalue().splitlines()


def crashed_holder(topic: str, worker_id: str) -> None:
    assert TopicLock(topic, token=worker_id, worker_id=worker_id).acquire(limit=1, ttl=300)


def test_unlock_frees_a_crashed_workers_slot():
    crashed_holder("echo", "dead-worker")
    lines = unlock("echo", "--dry-run")
    assert len(lines) == 1 and lines[0].startswith("echo: held by dead-worker (host ")
    assert [h.worker_id for h in TopicLock.holders("echo")] == ["dead-worker"]

    lines = unlock("echo")
    assert len(lines) == 1 and lines[0].startswith("echo: released dead-worker (host ")
    assert "pid " in lines[0] and "since 20" in lines[0]
    assert TopicLock.holders("echo") == []
    assert TopicLock("echo", token="new-worker").acquire(limit=1)  # the slot is free again
    assert unlock("other") == ["other: no holders"]


def test_unlock_all():
    crashed_holder("echo", "w1")
    crashed_holder("other", "w2")
    lines = unlock("--all")
    assert any(line.startswith("echo: released w1") for line in lines)
    assert any(line.startswith("other: released w2") for line in lines)
    assert TopicLock.holders("echo") == TopicLock.holders("other") == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope"], "Unknown topic(s): nope"),
        ([], "Name the topics to unlock, or use --all"),
        (["echo", "--all"], "not both"),
    ],
)
def test_unlock_bad_input(args, message):
    crashed_holder("echo", "keep-me")
    with pytest.raises(CommandError) as info:
        call_command("unlock", *args, stdout=io.StringIO())
    assert message in str(info.value)
    assert [h.worker_id for h in TopicLock.holders("echo")] == ["keep-me"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-jobs", "0"], "--max-jobs: must be at least 1"),
        (["--processes", "x"], "--processes: 'x' is not a whole number"),
        (["--processes", "0"], "--processes: must be at least 1"),
        (["--isolation", "thread"], "--isolation: invalid choice: 'thread'"),
        (["--log-level", "chatty"], "--log-level: invalid choice"),
        (["--topics", "Bad Name"], "topic"),
        (["--topics", "echo", "no-such-topic"], "Unknown topic(s): no-such-topic"),
    ],
)
def test_jobworker_bad_arguments(args, message):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with pytest.raises(CommandError) as info:
            call_command("jobworker", *args, "--burst")
    finally:  # a worker that got as far as starting installs its own handlers
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert message.lower() in str(info.value).lower()
    assert "\n" not in str(info.value).strip()
    assert TopicLock.holders("echo") == []


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--topics", "no-such-topic"], 1, "Unknown topic(s): no-such-topic"),
        (["--max-jobs", "0"], 2, "must be at least 1"),
    ],
)
def test_jobworker_bad_arguments_on_the_command_line(args, code, message):
    proc = subprocess.run(manage_command("jobworker", *args), cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
