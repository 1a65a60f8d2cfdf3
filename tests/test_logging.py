"""Structured logs: every line the worker logs about a job carries its id, topic and
attempt as record attributes, and ``jobqueue.logging.JSONFormatter`` writes them as JSON."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import sys
import time

import pytest

from jobqueue import engine
from jobqueue.logging import JSONFormatter
from jobqueue.models import Job
from jobqueue.worker import maintenance
from jobqueue.worker.lifecycle import claim

from .workerutil import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def about(records: list[logging.LogRecord], job: Job) -> list[logging.LogRecord]:
    """The records whose message names ``job``."""
    return [r for r in records if str(job.pk) in r.getMessage()]


def assert_carry_fields(records: list[logging.LogRecord], job: Job) -> None:
    for record in records:
        assert (record.job_id, record.topic) == (str(job.pk), job.topic_id), record.getMessage()
        assert isinstance(record.attempt, int), record.getMessage()


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_every_worker_line_about_a_job_carries_its_fields(caplog, isolation):
    job = Job.objects.enqueue("flaky", {"succeed_on": 3}, max_attempts=2)
    caplog.set_level(logging.DEBUG, logger="jobqueue")
    run_worker("flaky", isolation=isolation)
    assert Job.objects.get(pk=job.pk).status == "failed"

    lines = about(caplog.records, job)
    assert_carry_fields(lines, job)
    assert [(r.levelname, r.attempt) for r in lines] == [
        ("DEBUG", 1),  # started
        ("INFO", 1),  # failed, retrying
        ("DEBUG", 1),  # ended
        ("DEBUG", 2),
        ("WARNING", 2),  # failed after 2 attempts
        ("DEBUG", 2),
    ]
    ended = [r for r in lines if hasattr(r, "outcome")]
    assert [(r.outcome, r.duration > 0) for r in ended] == [("retry", True), ("failed", True)]
    assert "attempt 2/2: failed" in ended[-1].getMessage()
    # Lines about no job in particular carry no job fields.
    assert all(not hasattr(r, "job_id") for r in caplog.records if r not in lines)


def test_a_success_is_logged_at_debug_only(caplog):
    job = Job.objects.enqueue("echo", {"x": 1})
    caplog.set_level(logging.INFO, logger="jobqueue")
    run_worker("echo")
    assert about(caplog.records, job) == []
    caplog.clear()
    job = Job.objects.enqueue("echo", {"x": 2})
    caplog.set_level(logging.DEBUG, logger="jobqueue")
    run_worker("echo")
    started, ended = about(caplog.records, job)
    assert_carry_fields([started, ended], job)
    assert "started (attempt 1/2)" in started.getMessage()
    assert ended.outcome == "succeeded" and ended.getMessage().endswith("the job is succeeded now.")


def test_the_recovery_of_a_lost_job_carries_its_fields(caplog):
    job = Job.objects.enqueue("echo", {})
    assert engine.pop("echo", 1, lease_seconds=0.1) == [str(job.pk)]
    assert claim(str(job.pk), "w-gone", os.getpid()) is not None
    time.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="jobqueue"):
        assert maintenance.reap(["echo"]) == 1
    (record,) = about(caplog.records, job)
    assert "from an expired lease: requeued" in record.getMessage()
    assert (record.job_id, record.topic, record.attempt) == (str(job.pk), "echo", 1)


def test_the_json_formatter_writes_one_object_per_line_with_the_job_fields():
    """Configured as the README says, through ``dictConfig``, on a real worker's lines."""
    stream = io.StringIO()
    logger = logging.getLogger("jobqueue")
    before = (logger.level, logger.propagate, list(logger.handlers))
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "jobqueue.logging.JSONFormatter"}},
        "handlers": {"stream": {"class": "logging.StreamHandler", "formatter": "json", "stream": stream}},
        "loggers": {"jobqueue": {"handlers": ["stream"], "level": "INFO", "propagate": False}},
    })
    try:
        job = Job.objects.enqueue("flaky", {"succeed_on": 2}, max_attempts=2)
        run_worker("flaky")
    finally:
        logger.handlers[:] = before[2]
        logger.setLevel(before[0])
        logger.propagate = before[1]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if "job_id" in line]
    assert mine == [{
        "time": mine[0]["time"],
        "level": "INFO",
        "logger": "jobqueue.worker",
        "message": mine[0]["message"],
        "job_id": str(job.pk),
        "topic": "flaky",
        "attempt": 1,
    }]
    assert mine[0]["message"].startswith(f"Job {job.pk} failed (attempt 1/2), retrying in")
    assert mine[0]["time"].endswith("+00:00")
    assert {line["logger"] for line in lines} == {"jobqueue.worker"}  # and the worker's other lines


def test_the_json_formatter_keeps_exceptions_and_odd_values():
    try:
        raise ValueError("bad <value>")
    except ValueError:
        record = logging.getLogger("jobqueue.tests").makeRecord(
            "jobqueue.tests", logging.ERROR, __file__, 1, "failed: %s", ("ünïcode",), sys.exc_info(),
            extra={"job_id": "abc", "attempt": 2, "when": object, "nested": {"a": [1, None]}},
        )
    data = json.loads(JSONFormatter().format(record))
    assert data["message"] == "failed: ünïcode"
    assert data["level"] == "ERROR"
    assert data["job_id"] == "abc" and data["attempt"] == 2
    assert data["nested"] == {"a": [1, None]}
    assert data["when"] == str(object)  # not JSON: written as str()
    assert data["exception"].startswith("Traceback") and "ValueError: bad <value>" in data["exception"]
    assert not {"msg", "args", "exc_info", "levelno", "pathname"} & set(data)
