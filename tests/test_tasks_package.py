"""The ``jobqueue.contrib.tasks`` package: lazy to import, its task topics held by a
registry object that only a backend fills, and its former module paths still working."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.test.utils import override_settings

from jobqueue import registry
from jobqueue.contrib.tasks import JobQueueBackend, TaskTopics, run_task_job, task_topics
from jobqueue.contrib.tasks.compat import TaskResultStatus, task_backends
from jobqueue.transitions.hooks import hooks
from jobqueue.worker import Worker
from tests.tasks_app import tasks
from tests.workerutil import REPO_ROOT, child_env

#: Run in a fresh process: what importing the package does, then what starting Django does.
IMPORT_THEN_SETUP = """
import sys

import jobqueue.contrib.tasks as package

assert "django.tasks" not in sys.modules and "django_tasks" not in sys.modules, "tasks framework imported"

# What Django's import_string does with TASKS' "BACKEND", possibly before the apps are ready.
from jobqueue.contrib.tasks import JobQueueBackend

assert "jobqueue.models" not in sys.modules, "models imported"

from jobqueue import registry
from jobqueue.contrib.tasks.backend import task_topics
from jobqueue.transitions.hooks import hooks

assert not task_topics.topics and not task_topics.prefixes, "task topics filled at import"
assert "jobqueue.tasks" not in hooks, "bridge attached at import"
assert registry.get("tasks.default") is None, "a queue registered at import"

import django

django.setup()  # app ready creates the backends of settings.TASKS

assert task_topics.topics == {"tasks.default", "tasks.emails"}, task_topics.topics
assert "jobqueue.tasks" in hooks
assert registry.get("tasks.default").func is package.run_task_job
print("checked")
"""


@pytest.mark.django_db
def test_importing_the_package_fills_no_registry_until_a_backend_is_created():
    done = subprocess.run([sys.executable, "-c", IMPORT_THEN_SETUP], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "checked"


def test_a_task_topics_registry_holds_only_what_it_is_given():
    def handler(job):
        return None

    topics = TaskTopics(handler)
    assert not topics.topics and not topics.prefixes
    assert "q.a" not in topics and topics.resolve("q.a") is None
    topics.add_prefix("q.", max_attempts=2)
    topics.add("single.x", max_attempts=1)
    try:
        assert "q.a" in topics and "single.x" in topics
        assert "q." not in topics and "other" not in topics and "single.y" not in topics
        spec = registry.get("q.a")
        assert spec.func is handler and topics.runs(spec)
        assert spec.defaults == {"max_attempts": 2, "description": "django.tasks queue 'a'"}
        assert registry.get("single.x").func is handler
        assert not task_topics.runs(spec)  # the package's own registry is another object
        topics.discard("single.x")
        assert "single.x" not in topics and registry.get("single.x") is None
    finally:
        topics.discard_prefix("q.")
        topics.discard("single.x")
    assert "q.a" not in topics and registry.get("q.a") is None


def test_the_configured_backend_filled_the_package_registry():
    backend = task_backends["default"]
    assert isinstance(backend, JobQueueBackend)
    assert {"tasks.default", "tasks.emails"} <= task_topics.topics
    assert task_topics.runs(registry.get("tasks.default"))
    assert "jobqueue.tasks" in hooks


@pytest.mark.django_db(transaction=True)
def test_the_former_module_paths_still_work():
    from jobqueue import backends, tasks_compat
    from jobqueue.contrib.tasks import compat

    assert backends.JobQueueBackend is JobQueueBackend and backends.run_task_job is run_task_job
    assert tasks_compat.task is compat.task and tasks_compat.PACKAGE == compat.PACKAGE
    former = {"default": {"BACKEND": "jobqueue.backends.JobQueueBackend", "QUEUES": ["default"],
                          "OPTIONS": {"TOPIC_PREFIX": "tasks."}}}
    with override_settings(TASKS=former):
        assert type(task_backends["default"]) is JobQueueBackend
        result = tasks.add.enqueue(1, 2)
        assert Worker(topics=["tasks.default"], burst=True, install_signals=False).run() == 0
        result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3
