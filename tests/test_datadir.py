"""Job data on disk: with ``JOBQUEUE["DATA_DIR"]`` set, each attempt leaves
``<job_id>/input.json``, ``output.json`` and ``metadata.json``."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test.utils import override_settings

from jobqueue.models import Job
from jobqueue.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def data_dir(tmp_path):
    with override_settings(JOBQUEUE={**settings.JOBQUEUE, "DATA_DIR": str(tmp_path)}):
        yield tmp_path


def run_worker(*topics: str, **kwargs) -> None:
    assert Worker(topics=list(topics), install_signals=False, burst=True, **kwargs).run() == 0


def read(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_attempt_writes_input_output_and_metadata(data_dir, isolation):
    job = Job.objects.enqueue("inspect", {"src": "a.png"})
    run_worker("inspect", isolation=isolation)
    job.refresh_from_db()
    folder = data_dir / str(job.pk)
    assert job.status == "succeeded"
    assert job.result["data_dir"] == str(folder) == job.data_dir
    assert read(folder / "input.json") == {"src": "a.png"}
    assert read(folder / "output.json") == job.result
    assert (folder / "note.txt").read_text() == "written by the handler"
    meta = read(folder / "metadata.json")
    execution = job.executions.get()
    assert meta["job"] == str(job.pk) and meta["topic"] == "inspect"
    assert meta["attempt"] == 1 and meta["outcome"] == "succeeded" and meta["status"] == "succeeded"
    assert meta["started_at"] == execution.started_at.isoformat()
    assert meta["finished_at"] == execution.finished_at.isoformat()
    assert meta["exit_code"] == execution.exit_code
    assert {"stdout", "stderr", "error"} <= set(meta)


def test_metadata_keeps_a_child_output_and_exit_code(data_dir):
    job = Job.objects.enqueue("loud", {"fail": True}, max_attempts=1)
    run_worker("loud")
    folder = data_dir / str(job.pk)
    meta = read(folder / "metadata.json")
    assert meta["outcome"] == "failed" and meta["status"] == "failed"
    assert meta["exit_code"] not in (0, None)
    assert "hello from the child" in meta["stdout"]
    assert "ValueError: boom" in meta["stderr"]
    assert "boom" in meta["error"]
    assert read(folder / "input.json") == {"fail": True}
    assert not (folder / "output.json").exists()


def test_each_attempt_rewrites_the_metadata(data_dir):
    job = Job.objects.enqueue("flaky", {"succeed_on": 2})
    run_worker("flaky")
    meta = read(data_dir / str(job.pk) / "metadata.json")
    assert (meta["attempt"], meta["outcome"]) == (2, "succeeded")
    assert read(data_dir / str(job.pk) / "output.json") == {"attempt": 2}


def test_no_data_dir_by_default(tmp_path):
    job = Job.objects.enqueue("inspect")
    run_worker("inspect")
    job.refresh_from_db()
    assert job.data_dir is None and job.result["data_dir"] is None
    assert list(tmp_path.iterdir()) == []
