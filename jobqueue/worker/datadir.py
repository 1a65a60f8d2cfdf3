"""Job data on disk (``JOBQUEUE["DATA_DIR"]``): ``<job_id>/input.json``, ``output.json``
and ``metadata.json`` per attempt, so a job can be inspected with ``ls`` and ``cat``."""

from __future__ import annotations

import json
import os
from typing import Any

from ..chaining import storable_result
from ..storable import storable_json


def _write(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str, ensure_ascii=False)
    os.replace(tmp, path)


def write_input(job: Any) -> None:
    folder = job.data_dir
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    _write(os.path.join(folder, "input.json"), job.payload)


def write_output(job: Any, execution: Any, outcome: Any) -> None:
    folder = job.data_dir
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    if outcome.ok:
        try:
            _write(os.path.join(folder, "output.json"), storable_json(storable_result(outcome.result)))
        except (TypeError, ValueError):
            pass
    _write(
        os.path.join(folder, "metadata.json"),
        {
            "job": str(job.pk),
            "topic": job.topic_id,
            "attempt": execution.attempt,
            "status": job.status,
            "started_at": execution.started_at.isoformat() if execution.started_at else None,
            "finished_at": execution.finished_at.isoformat() if execution.finished_at else None,
            "outcome": execution.outcome,
            "exit_code": execution.exit_code,
            "error": execution.error,
            "stdout": execution.stdout,
            "stderr": execution.stderr,
        },
    )
