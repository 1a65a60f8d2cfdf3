"""``createjob TOPIC DATA``: DATA as JSON text, a file, or ``-`` for standard input."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobqueue import engine
from jobqueue.models import Job
from tests.workerutil import REPO_ROOT, child_env, manage_command

pytestmark = pytest.mark.django_db(transaction=True)


def createjob(*args: str) -> Job:
    out = io.StringIO()
    call_command("createjob", *args, stdout=out)
    text = out.getvalue().strip()
    assert "\n" not in text
    return Job.objects.get(pk=uuid.UUID(text))


def test_json_argument():
    job = createjob("echo", '{"src": "a.png", "n": [1, 2]}')
    assert job.payload == {"src": "a.png", "n": [1, 2]}
    assert job.status == "queued"
    assert engine.queue_ids("echo") == [str(job.pk)]


def test_no_data_is_an_empty_payload():
    assert createjob("echo").payload == {}


def test_json_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"from": "file"}))
    assert createjob("echo", str(path)).payload == {"from": "file"}


def test_standard_input(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO('{"from": "stdin"}'))
    assert createjob("echo", "-").payload == {"from": "stdin"}


def test_options():
    parent = createjob("echo")
    dep = createjob("other")
    job = createjob("echo", "{}", "--priority", "10", "--entity-id", "img-1", "--parent-job-id", str(parent.pk),
                    "--depends-on", str(dep.pk), "--max-attempts", "5", "--timeout", "9")
    assert (job.priority, job.entity_id, job.parent_id) == (10, "img-1", parent.pk)
    assert (job.max_attempts, job.timeout) == (5, 9)
    assert job.status == "waiting"
    assert list(job.depends_on.values_list("pk", flat=True)) == [dep.pk]


@pytest.mark.parametrize(("data", "payload"), [("1e5", 100000.0), ("2E-3", 0.002), ("-1.5e+2", -150.0)])
def test_a_number_in_exponent_form_is_json(data, payload):
    assert createjob("echo", "--", data).payload == payload


def test_a_dependency_named_twice_is_one_dependency():
    dep = createjob("other")
    job = createjob("echo", "{}", "--depends-on", str(dep.pk), str(dep.pk))
    assert list(job.depends_on.values_list("pk", flat=True)) == [dep.pk]


def test_delay_schedules_the_job():
    before = timezone.now()
    job = createjob("echo", "{}", "--delay", "30s")
    assert job.status == "scheduled"
    assert before + dt.timedelta(seconds=29) < job.run_after < timezone.now() + dt.timedelta(seconds=31)
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 1}


def test_run_after_schedules_the_job():
    job = createjob("echo", "{}", "--run-after", "2099-01-31T12:00:00+00:00")
    assert job.status == "scheduled"
    assert job.run_after == dt.datetime(2099, 1, 31, 12, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    "args, message",
    [
        (["echo", "{not json"], "Invalid JSON"),
        (["echo", "[1, 2"], "Invalid JSON"),
        (["echo", "missing-file.json"], "neither JSON nor an existing file"),
        (["no-such-topic", "{}"], "Unknown topic 'no-such-topic'"),
        (["Bad Topic!", "{}"], "topic"),
        (["echo", "{}", "--priority", "500"], "out of range"),
        (["echo", "{}", "--priority", "high"], "not a whole number"),
        (["echo", "{}", "--delay", "soon"], "Invalid duration"),
        (["echo", "{}", "--delay=-5s"], "duration"),
        (["echo", "{}", "--run-after", "2030-01-31T12:00:00"], "no timezone"),
        (["echo", "{}", "--run-after", "tomorrow"], "not an ISO 8601"),
        (["echo", "{}", "--delay", "5s", "--run-after", "2030-01-31T12:00:00Z"], "not allowed with"),
        (["echo", "{}", "--parent-job-id", "42"], "not a job id"),
        (["echo", "{}", "--parent-job-id", str(uuid.uuid4())], "no job with id"),
        (["echo", "{}", "--delay", "1000000000d"], "too long"),
        (["echo", "{}", "--delay", "9" * 400], "too long"),
        (["echo", "[" * 101 + "]" * 101], "nested"),
        (["echo", "[" * 1500 + "]" * 1500], "nested"),
        (["echo", "[" * 10_000 + "]" * 10_000], "nested"),
        (["echo", "{}", "--depends-on", str(uuid.uuid4())], "no job with id"),
        (["echo", "{}", "--max-attempts", "0"], "at least 1"),
    ],
)
def test_bad_input_is_refused_with_one_line_and_writes_nothing(args, message):
    with pytest.raises(CommandError) as info:
        call_command("createjob", *args, stdout=io.StringIO())
    text = str(info.value)
    assert message.lower() in text.lower()
    assert "\n" not in text.strip()
    assert Job.objects.count() == 0
    assert engine.depths("echo") == {"queued": 0, "leased": 0, "scheduled": 0}


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"name": "Ren\u00e9"}'.encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8") as info:
        call_command("createjob", "echo", str(path), stdout=io.StringIO())
    assert "\n" not in str(info.value)
    assert Job.objects.count() == 0


def test_directory_is_not_a_json_file(tmp_path):
    with pytest.raises(CommandError, match="neither JSON nor an existing file"):
        call_command("createjob", "echo", str(tmp_path))
    assert Job.objects.count() == 0


def run_command(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(manage_command(*args), cwd=REPO_ROOT, env=child_env(), input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_standard_input_that_is_not_utf8_is_refused_in_one_line():
    env = {**child_env(), "PYTHONIOENCODING": "utf-8:strict"}  # as under a UTF-8 locale
    proc = subprocess.run(manage_command("createjob", "echo", "-"), cwd=REPO_ROOT, env=env,
                          input='{"name": "Ren\u00e9"}'.encode("latin-1"), capture_output=True, timeout=60)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "standard input is not UTF-8" in stderr
    assert Job.objects.count() == 0


def test_command_line_success_and_failure():
    ok = run_command("createjob", "echo", "-", stdin='{"via": "stdin"}')
    assert ok.returncode == 0, ok.stderr
    assert Job.objects.get(pk=ok.stdout.strip()).payload == {"via": "stdin"}

    bad = run_command("createjob", "echo", "{oops")
    assert bad.returncode != 0
    assert bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "Invalid JSON" in bad.stderr

    bad = run_command("createjob", "echo", "{}", "--priority", "500")
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "out of range" in bad.stderr
    assert Job.objects.count() == 1
