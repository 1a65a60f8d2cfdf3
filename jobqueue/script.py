"""For authors of script topics: ``TOPICS_DIR/<topic>.py`` run by a worker as a subprocess.

The worker starts the script in a working folder holding ``input.json`` (the
job's payload) and reads ``output.json`` when it exits 0. This module does the
file handling; it needs no Django settings::

    # topics/resize.py
    import jobqueue.script

    @jobqueue.script.main
    def run(data):
        path = resize(data["src"])
        return jobqueue.script.next_topic("notify", {"path": path})

``main`` runs the function at once when the file is executed as a script, so
define it last (helpers above it). ``run(func)`` does the same without the
decorator. The function may return:

- ``None``: no output;
- any JSON value: the job's result;
- ``next_topic("topic", data)``: chain one job (``{"next_topic": ..., "data": ...}``);
- a list of ``next_job("topic", data, priority=...)``: chain several (fan-out).

An exception (or ``sys.exit(n)`` with ``n != 0``) fails the attempt; the
traceback goes to stderr, which the worker records.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

#: The payload file, in the working folder (``JOBQUEUE_INPUT`` overrides the path).
INPUT_FILE = "input.json"
#: The result file, in the working folder (``JOBQUEUE_OUTPUT`` overrides the path).
OUTPUT_FILE = "output.json"
#: Options a chained job may carry from a script (the rest of ``enqueue()``'s are the worker's).
NEXT_OPTIONS = ("priority", "entity_id", "delay", "max_attempts", "timeout")


def input_path() -> str:
    return os.environ.get("JOBQUEUE_INPUT") or INPUT_FILE


def output_path() -> str:
    return os.environ.get("JOBQUEUE_OUTPUT") or OUTPUT_FILE


def read_input(path: str | None = None) -> Any:
    """The job's payload (``{}`` if the input file is missing, e.g. when run by hand)."""
    path = path or input_path()
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def next_topic(topic: str, data: Any = None) -> dict[str, Any]:
    """Chain one job of ``topic`` with payload ``data``."""
    _check_topic(topic)
    return {"next_topic": topic, "data": data}


def next_job(topic: str, data: Any = None, **options: Any) -> dict[str, Any]:
    """One item of a fan-out: return a list of these to chain several jobs."""
    _check_topic(topic)
    unknown = set(options) - set(NEXT_OPTIONS)
    if unknown:
        raise TypeError(
            f"next_job(): unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(NEXT_OPTIONS)}"
        )
    return {"topic": topic, "data": data, "options": options}


def to_output(result: Any) -> Any:
    """What goes into ``output.json`` for a function's return value."""
    if _is_next(result):
        return {"next": [_next_item(result)]}
    if isinstance(result, list) and result and all(_is_next(r) or _is_next_item(r) for r in result):
        return {"next": [r if _is_next_item(r) else _next_item(r) for r in result]}
    return result


def write_output(result: Any, path: str | None = None) -> None:
    """Write ``output.json`` (atomically: a reader never sees half a file)."""
    path = path or output_path()
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(to_output(result), fh, ensure_ascii=False, allow_nan=False)
    os.replace(tmp, path)


def run(func: Callable[[Any], Any]) -> int:
    """Read the input, call ``func(data)``, write its result; returns the exit code (0)."""
    result = func(read_input())
    if result is not None:
        write_output(result)
    return 0


def main(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorator: when the file runs as a script, run ``func`` and exit; on import, do nothing."""
    if getattr(func, "__module__", None) == "__main__":
        sys.exit(run(func))
    return func


def _check_topic(topic: Any) -> None:
    if not isinstance(topic, str) or not topic:
        raise TypeError(f"A topic name is a non-empty string, not {topic!r}.")


def _is_next(value: Any) -> bool:
    # jobqueue.Next, recognised without importing Django.
    return type(value).__name__ == "Next" and hasattr(value, "topic") and hasattr(value, "data")


def _is_next_item(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"topic", "data", "options"}


def _next_item(value: Any) -> dict[str, Any]:
    options = {k: v for k, v in (getattr(value, "options", None) or {}).items() if k in NEXT_OPTIONS}
    return {"topic": value.topic, "data": value.data, "options": options}
