"""What a task worker refuses to run, and how a backend's configuration is checked."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from django.core import checks
from django.test.utils import override_settings

from jobqueue import registry
from jobqueue.contrib.tasks import JobQueueBackend, TaskNotAllowed, load_task, run_task_job, task_topics
from jobqueue.contrib.tasks.compat import InvalidTask, TaskResultStatus, task_backends
from jobqueue.models import Job
from jobqueue.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


def run_worker(*topics: str) -> None:
    assert Worker(topics=list(topics or ["tasks.default"]), burst=True, install_signals=False).run() == 0


def task_job(path, args=(), kwargs=None, backend="default", topic="tasks.default", **options):
    payload = {"task": path, "args": list(args), "kwargs": kwargs or {}, "backend": backend}
    return Job.objects.enqueue(topic, payload, **options)


@pytest.mark.parametrize(
    "path, args",
    [
        ("os.system", lambda marker: [f"touch {marker}"]),
        ("subprocess.call", lambda marker: [["touch", marker]]),
        ("subprocess.check_output", lambda marker: [["touch", marker]]),
    ],
)
def test_arbitrary_callables_in_a_payload_are_refused_not_called(tmp_path, path, args):
    marker = str(tmp_path / f"called-{uuid.uuid4().hex}")
    job = task_job(path, args(marker), max_attempts=3)
    run_worker()
    job.refresh_from_db()
    assert job.status == "failed"
    assert "not a task" in job.error
    assert job.attempts == 1  # a refused payload is not retried
    assert not (tmp_path / marker).exists()


def test_modules_outside_installed_apps_are_not_imported():
    sys.modules.pop("this", None)  # importing it prints; proof enough that it was imported
    job = task_job("this.s")
    run_worker()
    job.refresh_from_db()
    assert job.status == "failed" and "not part of an installed app" in job.error
    assert "this" not in sys.modules


def test_a_task_module_of_an_installed_app_is_imported_on_demand():
    sys.modules.pop("tests.tasks_app.lazy", None)
    job = task_job("tests.tasks_app.lazy.ping")
    run_worker()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.result == {"return_value": "pong"}


def test_a_plain_function_of_an_installed_app_is_refused():
    job = task_job("tests.tasks_app.tasks.plain_function")
    run_worker()
    job.refresh_from_db()
    assert job.status == "failed" and "is a function, not a task" in job.error


@pytest.mark.parametrize(
    "payload",
    [
        {"task": "tests.tasks_app.tasks.add", "args": [1, 2], "kwargs": {}, "backend": "nope"},
        {"task": "tests.tasks_app.tasks.add", "args": "1, 2", "kwargs": {}, "backend": "default"},
        {"task": "tests.tasks_app.tasks.add", "args": [], "kwargs": [], "backend": "default"},
        {"task": "../../etc/passwd", "args": [], "kwargs": {}, "backend": "default"},
        {"task": ["os", "system"], "args": [], "kwargs": {}, "backend": "default"},
        {"args": [], "kwargs": {}},
        ["not", "a", "dict"],
    ],
)
def test_malformed_payloads_fail_the_job(payload):
    job = Job.objects.enqueue("tasks.default", payload, max_attempts=2)
    run_worker()
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.attempts == 1


def test_load_task_refuses_everything_but_tasks():
    from tests.tasks_app import tasks

    assert load_task("tests.tasks_app.tasks.add") is tasks.add
    for path in ("os.system", "os", "tests.tasks_app.tasks.CustomError", "", "a", "x.y-z", None, 3):
        with pytest.raises(TaskNotAllowed):
            load_task(path)


def test_a_module_listed_in_task_modules_may_be_imported():
    sys.modules.pop("this", None)
    with pytest.raises(TaskNotAllowed, match="installed app"):
        load_task("this.s")
    with pytest.raises(TaskNotAllowed, match="not a task"):
        load_task("this.s", extra_modules=["this"])  # imported, then refused: a str is not a task
    assert "this" in sys.modules


# -- configuration --------------------------------------------------------------------------


def errors_of(alias, params):
    return {message.id for message in JobQueueBackend(alias, params).check()}


def test_check_reports_a_queue_that_is_a_handler_topic():
    assert errors_of("clash", {"QUEUES": ["echo"]}) == {"jobqueue.E203"}
    assert registry.get("echo").func is not run_task_job  # the handler keeps its topic


def test_check_reports_bad_configuration():
    assert errors_of("open", {"QUEUES": []}) == {"jobqueue.E202"}
    assert errors_of("bad", {"QUEUES": ["Not A Topic"]}) == {"jobqueue.E204"}
    options = {"TOPIC_PREFIX": "t.", "MAX_ATEMPTS": 2}
    assert errors_of("typo", {"QUEUES": ["x-ok"], "OPTIONS": options}) == {"jobqueue.E201"}
    options = {"TOPIC_PREFIX": "t.", "ISOLATION": "thread"}
    assert errors_of("iso", {"QUEUES": ["x-ok"], "OPTIONS": options}) == {"jobqueue.E204"}
    task_topics.discard("t.x-ok")


def test_check_reports_jobqueue_missing_from_installed_apps():
    from django.conf import settings

    backend = task_backends["default"]
    assert backend.check() == []
    without = [app for app in settings.INSTALLED_APPS if app != "jobqueue"]
    with override_settings(INSTALLED_APPS=without):
        [error] = backend.check()
    assert error.id == "jobqueue.E205" and error.level == checks.ERROR
    assert "'jobqueue'" in error.msg and "INSTALLED_APPS" in error.hint


def test_a_task_on_a_handler_topic_is_refused():
    clash = {"default": {"BACKEND": "jobqueue.contrib.tasks.JobQueueBackend", "QUEUES": ["echo"]}}
    with override_settings(TASKS=clash):
        from tests.tasks_app import tasks

        with pytest.raises(InvalidTask, match="echo"):
            tasks.add.using(queue_name="echo")


@pytest.fixture
def open_backend():
    """A backend accepting any queue under the prefix ``dyn.``."""
    tasks_setting = {
        "default": {
            "BACKEND": "jobqueue.contrib.tasks.JobQueueBackend",
            "QUEUES": [],
            "OPTIONS": {"TOPIC_PREFIX": "dyn.", "MAX_ATTEMPTS": 2, "TIMEOUT": 7},
        }
    }
    with override_settings(TASKS=tasks_setting):
        yield task_backends["default"]
    task_topics.discard_prefix("dyn.")


def test_any_queue_under_the_prefix_becomes_a_topic_on_demand(open_backend):
    from tests.tasks_app import tasks

    result = tasks.add.using(queue_name="anything").enqueue(20, 1)
    job = Job.objects.get(pk=result.id)
    assert job.topic_id == "dyn.anything"
    assert (job.max_attempts, job.timeout) == (2, 7)  # the backend's OPTIONS
    assert job.topic.description == "django.tasks queue 'anything'"
    run_worker("dyn.anything")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 21
    assert registry.get("unrelated") is None  # the prefix does not claim other topics


# -- a real worker process ------------------------------------------------------------------


def test_a_jobworker_process_runs_tasks_it_has_never_imported(tmp_path):
    """In a fresh process the queues are topics from app start (no task module imported
    yet), and the worker imports the task's module because it belongs to an installed app."""
    from tests.tasks_app import lazy
    from tests.workerutil import WorkerPool

    result = lazy.ping.enqueue()
    failing = task_job("os.system", ["true"])
    pool = WorkerPool(tmp_path)
    try:
        worker = pool.start("--topics", "tasks.default", "--burst")
        assert worker.wait(60) == 0, worker.output()
    finally:
        pool.close()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "pong"
    assert len(result.worker_ids) == 1 and result.worker_ids[0] != ""
    failing.refresh_from_db()
    assert failing.status == "failed" and "not a task" in failing.error


# -- the tasks framework's next backport ----------------------------------------------------


def next_backport(folder: Path) -> None:
    """Write into ``folder`` a ``django_tasks`` package shaped like the backport release that
    renames ``InvalidTaskError`` to ``InvalidTask`` with no alias, made from what is installed:
    the backport itself (Django 5.2), else ``django.tasks``, which the backport copies."""
    try:
        import django_tasks

        source, renames = Path(django_tasks.__file__).parent, {"InvalidTaskError": "InvalidTask"}
    except ModuleNotFoundError:
        import django.tasks

        source, renames = Path(django.tasks.__file__).parent, {"django.tasks": "django_tasks"}
        (folder / "django_tasks").mkdir()
        (folder / "django_tasks" / "utils.py").write_text("from django.utils.json import normalize_json  # noqa\n")
    for path in source.rglob("*.py"):
        text = path.read_text()
        for old, new in renames.items():
            text = text.replace(old, new)
        target = folder / "django_tasks" / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


#: Imports jobqueue through that backport, with ``django.tasks`` hidden as on Django 5.2.
IMPORT_THROUGH_THE_BACKPORT = """
import sys

sys.modules["django.tasks"] = None
import django

django.setup()
from django_tasks import exceptions
from jobqueue.contrib.tasks import compat
from tests.tasks_app import tasks

assert not hasattr(exceptions, "InvalidTaskError")
assert compat.PACKAGE == "django_tasks", compat.PACKAGE
assert compat.InvalidTask is exceptions.InvalidTask
try:
    tasks.add.using(priority=1000)
except exceptions.InvalidTask as exc:
    print("refused:", exc)
"""


def test_the_backport_release_that_renames_invalid_task_error_is_supported(tmp_path):
    import subprocess

    from tests.workerutil import REPO_ROOT, child_env

    next_backport(tmp_path)
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-c", IMPORT_THROUGH_THE_BACKPORT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: priority must be" in done.stdout
