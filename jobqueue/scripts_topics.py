"""Script topics: with ``JOBQUEUE["TOPICS_DIR"]`` set, the file ``TOPICS_DIR/<topic>.py``
is the handler of ``<topic>``, run as a subprocess.

The script runs in a working folder (the job's ``DATA_DIR`` folder, else a temporary
one) holding ``input.json``, the payload; if it exits 0, ``output.json`` is the
job's result, and ``{"next_topic": ..., "data": ...}`` in it chains the next job
(see :mod:`jobqueue.script`). Its stdout, stderr and exit code are recorded on the
attempt's Execution; a non-zero exit fails the attempt, the job's timeout kills it.

The interpreter is ``JOBQUEUE["SCRIPT_INTERPRETER"]`` (e.g. ``["uv", "run"]``),
by default the worker's own Python. A topic whose script resolves outside
``TOPICS_DIR`` (``..``, an absolute path, a symlink leading out) is never run.

The shell topic's handler (:func:`run_shell`) runs its command the same way; what
enqueueing a shell job checks is in :mod:`jobqueue.shell`. Like any handler, these
sit above the worker that runs them: a timeout raises the worker's ``JobTimeout``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import shell
from .chaining import Next
from .conf import settings
from .constants import SHELL_TOPIC
from .exceptions import InvalidJob, JobQueueError
from .registry import HandlerSpec
from .script import INPUT_FILE, OUTPUT_FILE
from .validation import validate_topic_name
from .worker.runner import JobTimeout

logger = logging.getLogger("jobqueue.scripts")

#: Seconds between two checks, while a subprocess runs, for its timeout and a cancel request.
POLL_SECONDS = 0.1
#: Seconds between two looks in Redis for a cancel request while a subprocess runs.
ABORT_CHECK_SECONDS = 1.0


class UnsafeScriptPath(InvalidJob):
    """A script topic's file resolves outside ``TOPICS_DIR``."""


class ProcessFailed(JobQueueError):
    """A script or command exited with a non-zero code, or could not be started."""


# -- resolving a topic to its script ------------------------------------------------


def topics_dir() -> str | None:
    base = settings.TOPICS_DIR
    return os.path.realpath(os.fspath(base)) if base else None


def script_path(topic: Any) -> str | None:
    """The real path of ``topic``'s script, or ``None`` if there is no such file.

    Raises :class:`InvalidJob` for a name that is not a topic name (``../x``,
    ``/etc/x``) and :class:`UnsafeScriptPath` for a file leading out of ``TOPICS_DIR``.
    """
    root = topics_dir()
    if root is None:
        return None
    validate_topic_name(topic)
    candidate = os.path.join(root, f"{topic}.py")
    if not os.path.lexists(candidate):
        return None
    path = os.path.realpath(candidate)
    if os.path.commonpath([root, path]) != root:
        raise UnsafeScriptPath(
            f"The script of topic {topic!r} resolves to {path}, outside TOPICS_DIR ({root})."
        )
    return path if os.path.isfile(path) else None


def resolve_handler(topic: str) -> HandlerSpec | None:
    """Registry resolver: a handler for ``topic`` if ``TOPICS_DIR/<topic>.py`` is a safe script.

    Never raises: an unsafe or missing script simply makes no handler (so the topic
    is unknown to ``enqueue()``, and a worker fails its jobs without running anything).
    """
    try:
        path = script_path(topic)
    except UnsafeScriptPath as exc:
        logger.warning("Refusing script topic: %s", exc)
        return None
    except InvalidJob:
        return None
    if path is None:
        return None
    return HandlerSpec(
        topic=topic,
        func=run_script,
        defaults={"description": f"Script {os.path.basename(path)}", "isolation": "inline"},
    )


def interpreter() -> list[str]:
    """``JOBQUEUE["SCRIPT_INTERPRETER"]`` as an argument list (default: this Python)."""
    value = settings.SCRIPT_INTERPRETER
    if value is None:
        return [sys.executable]
    if isinstance(value, str):
        value = shlex.split(value)
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ImproperlyConfigured(
            f"JOBQUEUE['SCRIPT_INTERPRETER'] must be a non-empty list of strings such as ['uv', 'run'], "
            f"not {value!r}."
        )
    return list(value)


# -- running a subprocess (shared with the shell topic) -------------------------------


@dataclass
class ProcessResult:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    aborted: bool = False


def _tail(fh: Any, limit: int) -> str:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - limit))
    return fh.read().decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The child leads its own session: killing the group takes its children along.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _record(job: Any, result: ProcessResult) -> None:
    execution = getattr(job, "execution", None)
    if execution is not None:
        execution.stdout, execution.stderr = result.stdout, result.stderr
        execution.exit_code = result.exit_code
    else:
        # In a forked child the worker captures this process's own output instead.
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)


def run_process(job: Any, argv: Sequence[str], *, cwd: str, env: dict[str, str] | None = None,
                what: str = "process") -> ProcessResult:
    """Run ``argv`` (never through a shell) for ``job`` and record its output on the job's
    execution, even when the attempt ends in a timeout or a stop.

    Returns the result of an exit 0; raises :class:`ProcessFailed` for a non-zero exit,
    ``JobTimeout`` once ``job.timeout`` passes, and an error after ``job.cancel()``.
    """
    limit = settings.MAX_OUTPUT_BYTES
    timeout = float(job.timeout) if job.timeout else None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True)
        except OSError as exc:
            raise ProcessFailed(f"Could not start {what} {argv[0]!r}: {exc}") from exc
        started = time.monotonic()
        next_abort_check = started + ABORT_CHECK_SECONDS
        timed_out = aborted = False
        try:
            while True:
                try:
                    proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    if timeout is not None and now - started >= timeout:
                        timed_out = True
                        break
                    if now >= next_abort_check:
                        next_abort_check = now + ABORT_CHECK_SECONDS
                        if job.should_abort():
                            aborted = True
                            break
        finally:
            # Also on the worker's own timeout alarm or a stop: nothing outlives the attempt.
            if proc.returncode is None:
                _kill_group(proc)
            result = ProcessResult(proc.returncode, _tail(out, limit), _tail(err, limit), timed_out, aborted)
            _record(job, result)
    if timed_out:
        raise JobTimeout(f"Timed out after {job.timeout}s; the {what} was killed")
    if aborted:
        raise ProcessFailed(f"Cancelled while running; the {what} was killed")
    if result.exit_code != 0:
        last = result.stderr.strip().splitlines()[-1:] or [""]
        detail = f": {last[0][:200]}" if last[0] else ""
        raise ProcessFailed(f"The {what} exited with code {result.exit_code}{detail}")
    return result


class WorkingFolder:
    """The job's ``DATA_DIR`` folder if there is one, else a temporary folder removed afterwards."""

    def __init__(self, job: Any, prefix: str):
        self.job = job
        self.prefix = prefix
        self.path = ""
        self.temporary = False

    def __enter__(self) -> str:
        folder = self.job.data_dir
        if folder:
            os.makedirs(folder, exist_ok=True)
            self.path = folder
        else:
            self.path = tempfile.mkdtemp(prefix=self.prefix)
            self.temporary = True
        return self.path

    def __exit__(self, *exc: Any) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


# -- the handler ----------------------------------------------------------------------


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)


def _read_output(path: str, topic: str) -> Any:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ProcessFailed(f"Script {topic!r} wrote an output.json that is not JSON: {exc}") from exc
    items = data.get("next") if isinstance(data, dict) and set(data) == {"next"} else None
    if isinstance(items, list) and items and all(isinstance(i, dict) and "topic" in i for i in items):
        return [Next.read(i["topic"], i.get("data"), **(i.get("options") or {})) for i in items]
    return data


def run_script(job: Any) -> Any:
    """The handler of every script topic: run ``TOPICS_DIR/<topic>.py`` for ``job``."""
    topic = job.topic_id
    path = script_path(topic)  # again: the file may have changed since the job was enqueued
    if path is None:
        raise ProcessFailed(f"No script for topic {topic!r} in TOPICS_DIR ({topics_dir()}).")
    with WorkingFolder(job, prefix=f"jobqueue-{topic}-") as folder:
        input_path, output_path = os.path.join(folder, INPUT_FILE), os.path.join(folder, OUTPUT_FILE)
        _write_json(input_path, job.payload)
        if os.path.exists(output_path):
            os.remove(output_path)  # a previous attempt's output must not pass for this one's
        env = dict(os.environ)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env.update(
            JOBQUEUE_JOB_ID=str(job.pk),
            JOBQUEUE_TOPIC=topic,
            JOBQUEUE_ATTEMPT=str(job.attempts),
            JOBQUEUE_INPUT=input_path,
            JOBQUEUE_OUTPUT=output_path,
            # So ``import jobqueue.script`` works in the script, installed package or not.
            PYTHONPATH=os.pathsep.join(p for p in (env.get("PYTHONPATH"), package_parent) if p),
        )
        run_process(job, [*interpreter(), path], cwd=folder, env=env, what=f"script {topic!r}")
        return _read_output(output_path, topic)


# -- the shell topic's handler --------------------------------------------------------


def run_shell(job: Any) -> dict[str, Any]:
    """The handler of the shell topic (:mod:`jobqueue.shell`)."""
    # Checked again here: a job queued while the topic was on must not run once it is off.
    shell.check_enabled()
    argv = shell.command_argv(job.payload)
    with WorkingFolder(job, prefix="jobqueue-shell-") as folder:
        result = run_process(job, argv, cwd=folder, what=f"command {argv[0]!r}")
    return {"exit_code": result.exit_code}


def resolve_shell_handler(topic: str) -> HandlerSpec | None:
    """Registry resolver: the shell topic's handler (also while off, so a worker refuses
    its jobs with a clear error instead of not knowing the topic)."""
    if topic != SHELL_TOPIC:
        return None
    return HandlerSpec(
        topic=SHELL_TOPIC,
        func=run_shell,
        defaults={"description": "Runs a command line (no shell)", "max_attempts": 1, "isolation": "inline"},
    )
