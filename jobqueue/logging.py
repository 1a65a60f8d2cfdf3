"""Structured logs: the fields of a log line about a job, and a formatter that writes
each record as one line of JSON.

Every line the worker and the transitions log about a job carries the job's ``job_id``,
``topic`` and ``attempt`` as record attributes (passed as ``extra=``, see
:func:`job_extra`), so any formatter can show them and a JSON one keeps them as fields::

    LOGGING = {
        "version": 1,
        "formatters": {"json": {"()": "jobqueue.logging.JSONFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
        "loggers": {"jobqueue": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

#: The attributes every LogRecord has; anything else on a record came from ``extra=``.
STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def job_extra(job: Any) -> dict[str, Any]:
    """The ``extra=`` of a log line about ``job``: its id, topic and attempt number."""
    return {"job_id": str(job.pk), "topic": job.topic_id, "attempt": job.attempts}


def job_id_extra(job_id: str, topic: str) -> dict[str, Any]:
    """The ``extra=`` of a log line about a job whose row was not read (no attempt known)."""
    return {"job_id": str(job_id), "topic": topic, "attempt": None}


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, every field given with ``extra=`` (``job_id``, ``topic``, ``attempt``
    on lines about a job), and ``exception`` / ``stack`` when the record has them.

    Values JSON cannot hold are written as their ``str()``. No dependency beyond the
    standard library; use it from ``LOGGING`` with ``{"()": "jobqueue.logging.JSONFormatter"}``.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in STANDARD_ATTRIBUTES and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)
