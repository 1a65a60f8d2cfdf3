"""The built-in shell topic: off by default, a command line per job when on."""

from __future__ import annotations

import os
import sys

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied

from jobqueue import shell
from jobqueue.exceptions import InvalidJob
from jobqueue.models import Execution, Job, Topic
from jobqueue.worker import Worker

from .test_admin_support import client_for, make_user, topic_form, topic_url
from .workerutil import jobqueue_settings

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shell_on():
    with jobqueue_settings(SHELL_TOPIC=True):
        yield


def run_worker() -> None:
    assert Worker(topics=["shell"], burst=True, install_signals=False).run() == 0


def run_one(payload, **kwargs) -> tuple[Job, Execution]:
    job = Job.objects.enqueue("shell", payload, **kwargs)
    run_worker()
    job.refresh_from_db()
    executions = list(Execution.objects.filter(job=job))
    assert len(executions) == 1
    return job, executions[0]


def test_shell_topic_is_off_by_default_and_enqueueing_is_refused():
    with pytest.raises(shell.ShellTopicDisabled, match="SHELL_TOPIC"):
        Job.objects.enqueue("shell", {"command": "echo hi"})
    assert not Topic.objects.filter(name="shell").exists()
    with pytest.raises(shell.ShellTopicDisabled):
        Job.objects.enqueue_many([("shell", {"command": "echo hi"})])
    assert not Job.objects.exists()


def test_worker_refuses_a_shell_job_once_the_topic_is_off(tmp_path):
    marker = tmp_path / "touched"
    with jobqueue_settings(SHELL_TOPIC=True):
        job = Job.objects.enqueue("shell", {"argv": ["touch", str(marker)]})
    run_worker()
    job.refresh_from_db()
    assert job.status == "failed"
    assert "shell topic is disabled" in job.error
    assert not marker.exists()


def test_a_worker_serves_the_shell_topic_before_its_first_job(shell_on):
    assert not Topic.objects.filter(name="shell").exists()
    run_worker()  # Worker(topics=["shell"]) accepted the topic
    job, execution = run_one({"argv": ["true"]})
    assert (job.status, execution.exit_code) == ("succeeded", 0)


def test_command_runs_without_a_shell_and_records_output(shell_on):
    job, execution = run_one({"command": "echo 'hello world' $HOME | cat"})
    assert job.status == "succeeded", job.error
    assert job.result == {"exit_code": 0}
    assert execution.exit_code == 0
    assert execution.stdout == "hello world $HOME | cat\n"  # no shell: no expansion, no pipe


def test_argv_form_and_non_zero_exit(shell_on):
    code = "import sys; print('partial'); sys.stderr.write('nope\\n'); sys.exit(4)"
    job, execution = run_one({"argv": [sys.executable, "-c", code]})
    assert job.status == "failed"
    assert "exited with code 4: nope" in job.error
    assert (execution.exit_code, execution.stdout, execution.stderr) == (4, "partial\n", "nope\n")


def test_shell_jobs_are_not_retried_by_default(shell_on):
    job, _ = run_one({"argv": ["false"]})
    assert (job.status, job.attempts, job.max_attempts) == ("failed", 1, 1)


def test_missing_program_fails_clearly(shell_on):
    job, execution = run_one({"argv": ["/no/such/program", "x"]})
    assert job.status == "failed"
    assert "Could not start command '/no/such/program'" in job.error
    assert execution.exit_code is None


def test_timeout_kills_the_command(shell_on):
    job, execution = run_one({"argv": ["sleep", "30"]}, timeout=1)
    assert job.status == "failed"
    assert execution.outcome == "timeout"
    assert execution.exit_code == -9


def test_command_runs_in_the_job_folder_or_a_temporary_one(shell_on, tmp_path):
    job, execution = run_one({"command": "pwd"})
    folder = execution.stdout.strip()
    assert os.path.basename(folder).startswith("jobqueue-shell-")
    assert not os.path.exists(folder)
    with jobqueue_settings(SHELL_TOPIC=True, DATA_DIR=str(tmp_path)):
        job, execution = run_one({"command": "pwd"})
    assert execution.stdout.strip() == str(tmp_path / str(job.pk))


@pytest.mark.parametrize(
    "payload",
    [
        {},
        None,
        {"command": ""},
        {"command": "   "},
        {"command": 5},
        {"argv": "ls -l"},
        {"argv": []},
        {"argv": ["ls", 1]},
        {"command": "ls", "argv": ["ls"]},
        {"command": "ls", "cwd": "/"},
        {"command": "echo 'unbalanced"},
        ["ls"],
    ],
)
def test_bad_payloads_are_refused_before_anything_is_written(shell_on, payload):
    with pytest.raises(InvalidJob):
        Job.objects.enqueue("shell", payload)
    assert not Job.objects.exists()


# -- who may enqueue ------------------------------------------------------------------


def test_permission_is_needed_to_enqueue_from_a_user_facing_place(shell_on):
    user = User.objects.create_user("operator")
    assert not shell.user_may_enqueue(user)
    with pytest.raises(PermissionDenied, match="enqueue_shell_job"):
        shell.check_permission(user)
    permission = Permission.objects.get(codename="enqueue_shell_job", content_type__app_label="jobqueue")
    user.user_permissions.add(permission)
    user = User.objects.get(pk=user.pk)  # permissions are cached per instance
    assert shell.user_may_enqueue(user)
    shell.check_permission(user)
    # Other job permissions are not enough.
    clerk = User.objects.create_user("clerk")
    clerk.user_permissions.add(Permission.objects.get(codename="cancel_job"))
    assert not shell.user_may_enqueue(User.objects.get(pk=clerk.pk))


def test_even_a_superuser_cannot_while_the_topic_is_off():
    admin = User.objects.create_superuser("admin")
    assert not shell.user_may_enqueue(admin)
    with pytest.raises(shell.ShellTopicDisabled):
        shell.check_permission(admin)
    with jobqueue_settings(SHELL_TOPIC=True):
        assert shell.user_may_enqueue(admin)


def test_only_true_turns_it_on():
    for value in ("yes", 1, "True"):
        with jobqueue_settings(SHELL_TOPIC=value):
            assert not shell.is_enabled()


# -- chaining into the shell topic ------------------------------------------------------


def test_the_topic_admin_lets_only_a_shell_user_chain_into_it(shell_on):
    for name in ("echo", "other", "shell"):
        Topic.objects.resolve(name)
    editor = client_for(make_user("editor", "jobqueue.view_topic", "jobqueue.change_topic"))
    trusted = client_for(make_user("trusted", "jobqueue.view_topic", "jobqueue.change_topic",
                                   "jobqueue.enqueue_shell_job"))
    echo = Topic.objects.get(name="echo")
    assert trusted.post(topic_url(echo), topic_form(echo, next_topic="shell")).status_code == 302
    assert Topic.objects.get(name="echo").next_topic == "shell"

    # Chaining into a topic that chains into the shell topic needs the permission too.
    other = Topic.objects.get(name="other")
    response = editor.post(topic_url(other), topic_form(other, next_topic="echo"))
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["next_topic"])
    assert "'echo' chains into 'shell'" in errors and "enqueue_shell_job" in errors
    assert Topic.objects.get(name="other").next_topic == ""
    assert trusted.post(topic_url(other), topic_form(other, next_topic="echo")).status_code == 302

    # A chain someone else set up is kept when other settings change.
    echo.refresh_from_db()
    assert editor.post(topic_url(echo), topic_form(echo, concurrency=3)).status_code == 302
    assert Topic.objects.filter(name="echo", concurrency=3, next_topic="shell").exists()


def test_enqueueing_into_a_chain_that_leads_to_the_shell_topic_needs_its_permission(shell_on, tmp_path):
    from django.test import Client

    from jobqueue.models_api import ApiToken

    Topic.objects.resolve("shell")
    Topic.objects.filter(name="other").update(next_topic="echo")
    Topic.objects.filter(name="echo").update(next_topic="shell")
    user = make_user("enqueuer", "jobqueue.add_job")
    client = Client(headers={"Authorization": f"Bearer {ApiToken.objects.issue(user)[1]}"})
    for topic in ("other", "echo"):
        response = client.post("/jobs/api/jobs/", {"topic": topic}, content_type="application/json")
        assert response.status_code == 403 and "enqueue_shell_job" in response.json()["error"]["message"]
    assert not Job.objects.exists()
    user.user_permissions.add(Permission.objects.get(codename="enqueue_shell_job"))
    response = client.post("/jobs/api/jobs/", {"topic": "other"}, content_type="application/json")
    assert response.status_code == 201, response.content

    # Code is trusted: a chain it enqueues into runs the command.
    marker = tmp_path / "touched"
    job = Job.objects.enqueue("echo", {"argv": ["touch", str(marker)]})
    assert Worker(topics=["echo", "shell"], burst=True, install_signals=False).run() == 0
    assert Job.objects.get(parent=job).status == "succeeded" and marker.exists()
