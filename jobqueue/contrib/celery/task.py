"""``@shared_task``: a Celery-style function registered as the handler of a topic.

``@shared_task`` (or ``@shared_task(name=..., max_retries=..., ...)``) registers
``f(*args, **kwargs)`` for the topic named like Celery names the task (the
function's module and name, e.g. ``"shop.tasks.send_receipt"``; ``name=`` sets
another). Its jobs' payload is ``{"args": [...], "kwargs": {...}}``, the shape the
inbound bridge gives jobs made from Celery messages, so the same function also runs
what a Celery client still sends.

The task keeps Celery's call sites: ``f(1, 2)`` runs inline, ``f.delay(1, 2)`` and
``f.apply_async(args, kwargs, countdown=..., eta=..., priority=...)`` enqueue a job
(:meth:`Job.objects.enqueue() <jobqueue.managers.JobManager.enqueue>`, in the
caller's transaction) and return a :class:`~.result.JobResult`; ``f.s()``/``f.si()``
make signatures for ``|`` chains (:mod:`.canvas`). ``bind=True`` passes a
:class:`BoundTask` first, whose ``retry()`` asks jobqueue for another attempt.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from ... import Retry
from ...registry import TOPIC_FIELDS, register
from ...validation import TOPIC_NAME_RE
from .canvas import UNSUPPORTED_OPTIONS, Signature, next_step
from .exceptions import NotSupported
from .payload import read_payload
from .result import JobResult

#: Celery task options that have no jobqueue meaning, and why they are ignored.
IGNORED_TASK_OPTIONS = {
    "queue": "every task is its own topic; choose workers with jobworker --topics",
    "ignore_result": "results are always stored on the job",
    "acks_late": "jobqueue always acknowledges after the job ran (at least once)",
    "track_started": "a running job is always shown as running",
    "typing": "arguments are checked when the function is called",
}
#: Celery task options that are refused, with what to use instead.
UNSUPPORTED_TASK_OPTIONS = {
    "autoretry_for": "every exception is retried while attempts remain: set max_retries (or max_attempts)",
    "retry_kwargs": "set max_retries, and retry_backoff (seconds, the base of the exponential delay)",
    "retry_jitter": "retry delays always have +/-25 % jitter",
    "retry_backoff_max": "set JOBQUEUE['MAX_RETRY_DELAY']",
    "soft_time_limit": "time_limit is the timeout; an inline handler past it gets JobTimeout raised inside it",
    "base": "there is one task class; subclass nothing, wrap the function instead",
    "throws": "every failure is recorded with its traceback",
    "expires": UNSUPPORTED_OPTIONS["expires"],
    "serializer": "jobs are stored as JSON",
}


def celery_rate(value: Any) -> str:
    """A Celery ``rate_limit`` (``"10/m"``, ``"5/s"``, ``"100/h"``, or a number: per second)
    as the topic's ``rate``. Celery limits each worker on its own; a topic's rate holds
    across every worker, so the same figure is a stricter limit here."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"@shared_task(rate_limit={value!r}): give e.g. '10/m', '5/s', '100/h' or a number.")
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text  # "10/m": the topic's rate checks it
    if number != int(number) or number < 1:
        raise ValueError(f"@shared_task(rate_limit={value!r}): give whole tasks per second, minute or hour "
                         f"(e.g. '30/m' rather than 0.5).")
    return f"{int(number)}/s"


def autodiscover_tasks() -> None:
    """Import every installed app's ``tasks`` module, as Celery's ``autodiscover_tasks()`` does."""
    autodiscover_modules("tasks")


def task_name(func: Callable[..., Any]) -> str:
    """The topic (and Celery task name) of a function: its module and name."""
    return f"{func.__module__}.{func.__name__}"


class Request:
    """What a bound task sees as ``self.request``: the call and the job running it."""

    def __init__(self, job: Any, args: list[Any], kwargs: dict[str, Any]):
        self.job = job
        self.id = str(job.pk) if job is not None else None
        #: Attempts before this one (Celery counts retries from 0).
        self.retries = job.attempt - 1 if job is not None else 0
        self.args = args
        self.kwargs = kwargs
        self.called_directly = job is None


class BoundTask:
    """The first argument of a ``bind=True`` task: the task, with ``request`` and ``retry()``."""

    def __init__(self, task: Task, request: Request):
        self._task = task
        self.request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: dt.datetime | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Ask for another attempt (raises :class:`jobqueue.Retry`): after ``countdown``
        seconds, at ``eta``, or after the task's ``default_retry_delay``.

        The job's ``max_attempts`` (``max_retries + 1``) bounds the attempts: when none
        is left, ``exc`` is raised if given, so the job fails with it.
        """
        job = self.request.job
        if job is None:
            raise NotSupported(f"{self._task.name}.retry() called outside a job: only a worker can retry a call.")
        limit = job.max_attempts if max_retries is None else min(job.max_attempts, max_retries + 1)
        if job.attempt >= limit and exc is not None:
            raise exc
        if countdown is None and eta is not None:
            countdown = max(0.0, (eta - timezone.now()).total_seconds())
        if countdown is None:
            countdown = self._task.default_retry_delay
        raise Retry(delay=countdown, reason=f"{self._task.name}.retry(): {exc}" if exc else "")


class Task:
    """A function registered by :func:`shared_task`, with Celery's calling API."""

    def __init__(
        self, func: Callable[..., Any], name: str, bind: bool = False, default_retry_delay: float | None = None
    ):
        self.run = func
        self.name = name
        self.bind = bind
        self.default_retry_delay = default_retry_delay
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<@shared_task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function here and now (no job), as calling a Celery task does."""
        if self.bind:
            return self.run(BoundTask(self, Request(None, list(args), kwargs)), *args, **kwargs)
        return self.run(*args, **kwargs)

    def handle(self, job: Any) -> Any:
        """The topic's handler: call the function with the job's ``args`` and ``kwargs``."""
        args, kwargs = read_payload(job.payload, what=f"A job of task {self.name!r}")
        if self.bind:
            result = self.run(BoundTask(self, Request(job, args, kwargs)), *args, **kwargs)
        else:
            result = self.run(*args, **kwargs)
        steps = job.payload.get("chain")
        return next_step(result, steps) if steps else result

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: ``add.s(2)`` is ``add`` given 2 (after any argument a chain passes)."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a chain does not pass it the previous result."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        immutable: bool = False,
        **options: Any,
    ) -> Signature:
        return Signature(self, args or (), kwargs, options, immutable)

    def delay(self, *args: Any, **kwargs: Any) -> JobResult:
        """Enqueue ``f(*args, **kwargs)`` as a job."""
        return Signature(self, args, kwargs).apply_async()

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> JobResult:
        """Enqueue ``f(*args, **kwargs)`` with Celery's options (``countdown``, ``eta``,
        ``priority``...; see :func:`.canvas.enqueue_options`)."""
        return Signature(self, args or (), kwargs).apply_async(**options)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupported(
            f"{self.name}.retry(): declare the task with @shared_task(bind=True) and call self.retry(), "
            f"or raise jobqueue.Retry(delay=...)."
        )

    def AsyncResult(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - Celery's name
        raise NotSupported(f"{self.name}.AsyncResult(): a job is its own result; use JobResult(job_id).")

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupported(f"{self.name}.apply(): call the task directly to run it here: {self.name}(...).")

    def map(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupported(
            f"{self.name}.map(): enqueue each call with .delay(), or all at once with Job.objects.enqueue_many()."
        )

    starmap = map
    chunks = map


def shared_task(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Register a function as the handler of a topic named after it (Celery's ``@shared_task``).

    Celery options: ``name`` (the topic; a valid topic name: lowercase), ``bind``,
    ``max_retries`` (``max_attempts = max_retries + 1``), ``time_limit`` (the timeout,
    seconds), ``default_retry_delay`` (for ``self.retry()``), ``priority`` (the topic's
    default priority), ``rate_limit`` (the topic's ``rate``: shared by every worker, where
    Celery's holds per worker). jobqueue's ``@handler`` options pass through (``max_attempts``,
    ``timeout``, ``isolation``, ``concurrency``, ``retry_backoff``...). Options listed
    in :data:`IGNORED_TASK_OPTIONS` are ignored; :data:`UNSUPPORTED_TASK_OPTIONS` raise
    :class:`NotSupported`.
    """
    if func is not None:
        if not callable(func):
            raise TypeError(f"@shared_task decorates a function, not {func!r}.")
        return _make_task(func, options)
    return lambda f: _make_task(f, options)


def _make_task(func: Callable[..., Any], options: dict[str, Any]) -> Task:
    options = dict(options)
    name = options.pop("name", None) or task_name(func)
    bind = bool(options.pop("bind", False))
    default_retry_delay = options.pop("default_retry_delay", 180)
    topic: dict[str, Any] = {}
    if "max_retries" in options:
        retries = options.pop("max_retries")
        if retries is None:
            raise NotSupported("@shared_task(max_retries=None): retrying forever is not supported; give a number.")
        topic["max_attempts"] = int(retries) + 1
    if "time_limit" in options:
        topic["timeout"] = options.pop("time_limit")
    if "rate_limit" in options:
        topic["rate"] = celery_rate(options.pop("rate_limit"))
    if isinstance(options.get("retry_backoff"), bool):
        raise NotSupported(
            "@shared_task(retry_backoff=True/False): retries always back off; give the base delay "
            "in seconds (retry_backoff=2.0)."
        )
    if options.get("serializer") in (None, "json"):
        options.pop("serializer", None)
    for key in list(options):
        if key in IGNORED_TASK_OPTIONS:
            options.pop(key)
        elif key in UNSUPPORTED_TASK_OPTIONS:
            raise NotSupported(f"@shared_task({key}=...) is not supported: {UNSUPPORTED_TASK_OPTIONS[key]}.")
        elif key not in TOPIC_FIELDS and key != "priority":
            raise TypeError(f"@shared_task got an unexpected option {key!r}.")
    topic.update(options)
    if not isinstance(name, str) or not TOPIC_NAME_RE.match(name):
        raise ValueError(
            f"@shared_task: {name!r} is not a valid topic name (lowercase letters, digits, '_', '.' and '-', "
            f"at most 100): give the task one with @shared_task(name='...')."
        )
    task = Task(func, name, bind=bind, default_retry_delay=default_retry_delay)

    def run_job(job: Any) -> Any:
        return task.handle(job)

    # The registry names a handler by its function's module and qualified name.
    run_job.__module__ = func.__module__
    run_job.__qualname__ = func.__qualname__
    run_job.__doc__ = func.__doc__
    register(name, run_job, **topic)
    return task
