"""Script topics: ``TOPICS_DIR/<topic>.py`` run by a real worker as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobqueue import registry
from jobqueue.exceptions import InvalidJob, UnknownTopic
from jobqueue.models import Execution, Job, Topic
from jobqueue.scripts_topics import UnsafeScriptPath, script_path
from jobqueue.worker import Worker

from .workerutil import REPO_ROOT, jobqueue_settings, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TOPICS = Path(__file__).resolve().parent / "topics"


@pytest.fixture
def topics_dir():
    with jobqueue_settings(TOPICS_DIR=str(TOPICS)):
        yield TOPICS


def run_worker(*topics: str) -> None:
    assert Worker(topics=list(topics), burst=True, install_signals=False).run() == 0


def only_execution(job: Job) -> Execution:
    executions = list(Execution.objects.filter(job=job))
    assert len(executions) == 1
    return executions[0]


def test_script_runs_records_output_and_chains(topics_dir):
    job = Job.objects.enqueue("double", {"n": 21})
    topic = Topic.objects.get(name="double")  # created from the file on first enqueue
    assert topic.description == "Script double.py"
    run_worker("double", "echo")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    execution = only_execution(job)
    assert execution.exit_code == 0
    assert execution.stdout == "doubling 21\n"
    assert execution.stderr == "a note on stderr\n"
    child = Job.objects.get(parent=job)
    assert (child.topic_id, child.payload, child.status) == ("echo", {"n": 42}, "succeeded")


def test_script_fan_out_with_options(topics_dir):
    job = Job.objects.enqueue("split", {"items": ["a", "b", "c"]})
    run_worker("split")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    children = {c.payload["item"]: c for c in Job.objects.filter(parent=job)}
    assert set(children) == {"a", "b", "c"}
    assert children["a"].priority == 10 and children["b"].priority == 0
    assert job.result == {"next": [{"topic": "echo", "data": {"item": i}} for i in "abc"]}


def test_script_without_the_helper_sees_its_folder_and_environment(topics_dir, tmp_path):
    with jobqueue_settings(TOPICS_DIR=str(TOPICS), DATA_DIR=str(tmp_path)):
        job = Job.objects.enqueue("plain", {"x": [1, 2]})
        run_worker("plain")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    folder = tmp_path / str(job.pk)
    assert job.result["got"] == {"x": [1, 2]}
    assert job.result["cwd"] == str(folder)
    assert (job.result["job_id"], job.result["topic"], job.result["attempt"]) == (str(job.pk), "plain", "1")
    assert json.loads((folder / "input.json").read_text()) == {"x": [1, 2]}


def test_working_folder_is_temporary_without_data_dir(topics_dir):
    job = Job.objects.enqueue("plain", {})
    run_worker("plain")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert os.path.basename(job.result["cwd"]).startswith("jobqueue-plain-")
    assert not os.path.exists(job.result["cwd"])


def test_interpreter_is_configurable(tmp_path):
    wrapper = (
        "import runpy, sys; open('marker', 'w').write('wrapped'); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    with jobqueue_settings(TOPICS_DIR=str(TOPICS), SCRIPT_INTERPRETER=[sys.executable, "-c", wrapper]):
        job = Job.objects.enqueue("plain", {})
        run_worker("plain")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result["marker"] == "wrapped"


def test_bad_interpreter_setting_fails_the_job_clearly():
    with jobqueue_settings(TOPICS_DIR=str(TOPICS), SCRIPT_INTERPRETER=["", 3]):
        job = Job.objects.enqueue("plain", {}, max_attempts=1)
        run_worker("plain")
    job.refresh_from_db()
    assert job.status == "failed"
    assert "SCRIPT_INTERPRETER" in job.error


def test_non_zero_exit_fails_with_code_and_output(topics_dir):
    job = Job.objects.enqueue("exit3", {}, max_attempts=1)
    run_worker("exit3")
    job.refresh_from_db()
    assert job.status == "failed"
    assert "exited with code 3: bad input: no 'n'" in job.error
    execution = only_execution(job)
    assert (execution.outcome, execution.exit_code) == ("failed", 3)
    assert execution.stdout == "looking at the input\n"
    assert "bad input" in execution.stderr


def test_exception_in_helper_function_fails_with_traceback(topics_dir):
    job = Job.objects.enqueue("raises", {"n": 1}, max_attempts=1)
    run_worker("raises")
    job.refresh_from_db()
    assert job.status == "failed"
    execution = only_execution(job)
    assert execution.exit_code == 1
    assert "ValueError: cannot handle {'n': 1}" in execution.stderr
    assert "Traceback" in execution.stderr


def test_output_that_is_not_json_fails(topics_dir):
    job = Job.objects.enqueue("badoutput", {}, max_attempts=1)
    run_worker("badoutput")
    job.refresh_from_db()
    assert job.status == "failed"
    assert "not JSON" in job.error


def test_timeout_kills_the_script_and_its_children(topics_dir, tmp_path):
    pidfile = tmp_path / "pids"
    job = Job.objects.enqueue("sleeper", {"pidfile": str(pidfile)}, timeout=2, max_attempts=1)
    run_worker("sleeper")
    job.refresh_from_db()
    assert job.status == "failed"
    assert "Timed out" in job.error
    execution = only_execution(job)
    assert execution.outcome == "timeout"
    assert execution.exit_code == -9
    assert execution.stdout == "started\n"
    for pid in map(int, pidfile.read_text().split()):
        wait_for(lambda pid=pid: not _alive(pid), timeout=5, message=f"process {pid} to be gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its (gone) parent to be reaped by init counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_process_isolation_still_records_the_script_output(topics_dir):
    Job.objects.enqueue("double", {"n": 1})  # creates the Topic row
    Topic.objects.filter(name="double").update(isolation="process")
    job = Job.objects.enqueue("double", {"n": 2})
    run_worker("double")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert "doubling 2" in only_execution(job).stdout


def test_registered_handler_wins_over_a_script(topics_dir):
    assert registry.get("echo").func.__module__ == "tests.testapp.jobs"
    assert registry.get("double").func.__name__ == "run_script"


# -- names and paths ------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path):
    """A TOPICS_DIR with a symlink to a script outside it that would leave a marker."""
    topics = tmp_path / "topics"
    topics.mkdir()
    evil = tmp_path / "evil.py"
    marker = tmp_path / "ran"
    evil.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (topics / "escape.py").symlink_to(evil)
    (topics / "inside.py").write_text("print('inside')\n")
    (topics / "alias.py").symlink_to(topics / "inside.py")
    with jobqueue_settings(TOPICS_DIR=str(topics)):
        yield topics, marker


@pytest.mark.parametrize(
    "name", ["../evil", "..", "/etc/passwd", "/tmp/evil", "sub/../../evil", "a/b", "Evil", ".hidden"]
)
def test_names_that_are_not_topic_names_are_refused(outside, name):
    topics, marker = outside
    with pytest.raises(InvalidJob):
        Job.objects.enqueue(name, {})
    with pytest.raises(InvalidJob):
        script_path(name)
    assert not Job.objects.exists() and not marker.exists()


def test_symlink_leading_outside_is_refused_everywhere(outside):
    topics, marker = outside
    with pytest.raises(UnsafeScriptPath, match="outside TOPICS_DIR"):
        script_path("escape")
    with pytest.raises(UnknownTopic):
        Job.objects.enqueue("escape", {})
    # A row made some other way (or a link swapped in later): the worker still refuses.
    Topic.objects.create(name="escape", max_attempts=1)
    job = Job.objects.enqueue("escape", {})
    run_worker("escape")
    job.refresh_from_db()
    assert job.status == "failed"
    assert not marker.exists()


def test_symlink_inside_the_folder_is_allowed(outside):
    topics, marker = outside
    assert script_path("alias") == str((topics / "inside.py").resolve())
    job = Job.objects.enqueue("alias", {})
    run_worker("alias")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert only_execution(job).stdout == "inside\n"


def test_script_removed_after_enqueue_fails_without_running(outside):
    topics, marker = outside
    job = Job.objects.enqueue("inside", {}, max_attempts=1)
    (topics / "alias.py").unlink()
    (topics / "inside.py").unlink()
    run_worker("inside")
    job.refresh_from_db()
    assert job.status == "failed"
    assert "No handler is registered for topic 'inside'" in job.error
    assert not Execution.objects.filter(job=job).exclude(stdout="").exists()


def test_without_topics_dir_there_are_no_script_topics():
    assert script_path("double") is None
    with pytest.raises(UnknownTopic):
        Job.objects.enqueue("double", {})


# -- the helper module ------------------------------------------------------------------


def test_helper_needs_no_django_settings(tmp_path):
    (tmp_path / "input.json").write_text(json.dumps({"n": 5}))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = REPO_ROOT
    subprocess.run([sys.executable, str(TOPICS / "double.py")], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    assert json.loads((tmp_path / "output.json").read_text()) == {"next_topic": "echo", "data": {"n": 10}}


def test_helper_converts_next_objects_and_refuses_unknown_options():
    import jobqueue.script
    from jobqueue import Next

    assert jobqueue.script.to_output(Next("echo", {"a": 1}, priority=3, parent="x")) == {
        "next": [{"topic": "echo", "data": {"a": 1}, "options": {"priority": 3}}]
    }
    assert jobqueue.script.to_output([{"topic": "t"}]) == [{"topic": "t"}]  # plain data stays data
    with pytest.raises(TypeError, match="unknown option"):
        jobqueue.script.next_job("echo", {}, depends_on=["x"])


@pytest.mark.parametrize("output", [
    {"next_topic": "shell", "data": {"command": "true"}},
    {"next": [{"topic": "shell", "data": {"command": "true"}, "options": {}}]},
])
def test_an_output_never_chains_into_the_shell_topic(topics_dir, output):
    """output.json is data (here the payload, relayed): it cannot start a shell job."""
    with jobqueue_settings(TOPICS_DIR=str(TOPICS), SHELL_TOPIC=True):
        job = Job.objects.enqueue("relay", output, max_attempts=1)
        run_worker("relay")
    job.refresh_from_db()
    assert job.status == "failed" and "'shell'" in job.error
    assert not Job.objects.filter(topic_id="shell").exists()
    # Into any other topic, the same output chains.
    allowed = Job.objects.enqueue("relay", {"next_topic": "echo", "data": {"n": 1}})
    run_worker("relay")
    assert Job.objects.get(parent=allowed).payload == {"n": 1}
