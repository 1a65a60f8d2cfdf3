"""OpenTelemetry tracing of jobs (the ``otel`` extra: ``pip install django-jobqueue[otel]``).

- ``Job.objects.enqueue()`` stores the context of the span active at that moment with the
  new job (``Job.trace_context``: what the configured propagator writes, by default the
  W3C ``traceparent``);
- the worker runs each attempt inside a span that continues that trace
  (:func:`job_span`), around the handler and the recording of its outcome;
- so a job the handler enqueues, and every job a success chains into, carries the same
  trace on: a pipeline of topics is one trace, each attempt one span in it.

A handler running in a forked child (``isolation="process"``) runs inside the
worker's span too (:func:`attached`), and the child flushes the spans it made before it
exits (:func:`flush`).

Without ``opentelemetry-api`` installed, or with ``JOBQUEUE["OPENTELEMETRY"] = False``,
every function here does nothing and imports nothing. With the API but no tracer
provider set (no SDK configured), the worker starts no span and contexts still travel
from job to job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import metadata
from types import SimpleNamespace
from typing import Any

from .conf import settings
from .states import ExecutionOutcome

#: Outcomes of an attempt that are failures: recorded with the exception, status ERROR.
FAILED_OUTCOMES = frozenset({ExecutionOutcome.FAILED, ExecutionOutcome.RETRY, ExecutionOutcome.TIMEOUT,
                             ExecutionOutcome.LOST})
#: Milliseconds a forked child waits for its spans to be exported before it exits.
FLUSH_MILLIS = 5000


@functools.cache
def _load() -> SimpleNamespace | None:
    """The OpenTelemetry API, imported on first use; ``None`` when it is not installed."""
    try:
        from opentelemetry import context, propagate, trace
    except ImportError:
        return None
    try:
        version: str | None = metadata.version("django-jobqueue")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        version = None
    return SimpleNamespace(
        context=context,
        propagate=propagate,
        trace=trace,
        tracer=trace.get_tracer("jobqueue", version),
    )


def _api() -> SimpleNamespace | None:
    return _load() if settings.OPENTELEMETRY else None


def preload() -> None:
    """Import the OpenTelemetry API now, if it is to be used: a process that forks a child
    per job calls this first, or each child would import it anew (with its propagators'
    entry points, read from every installed package's metadata: ~5 ms a job)."""
    _api()


def _provider_set(api: SimpleNamespace) -> bool:
    """Whether a tracer provider was set (by code, or named by ``OTEL_PYTHON_TRACER_PROVIDER``):
    until then the API hands out only non-recording spans."""
    stand_ins = (api.trace.ProxyTracerProvider, api.trace.NoOpTracerProvider)
    return not isinstance(api.trace.get_tracer_provider(), stand_ins)


def capture() -> dict[str, str] | None:
    """The active span's context as a carrier to store with a new job, or ``None`` when
    no span is active (or tracing is off)."""
    api = _api()
    if api is None or not api.context.get_current():  # nothing attached at all: no span (one call)
        return None
    if not api.trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    api.propagate.inject(carrier)
    return carrier or None


class JobSpan:
    """The span of one attempt; :meth:`ended` records how the attempt ended."""

    def __init__(self, span: Any = None, api: SimpleNamespace | None = None):
        self.span = span
        self.api = api

    def ended(self, execution: Any, exception: BaseException | None = None) -> None:
        """Record the attempt's outcome (``execution.outcome``); a failure also as an
        exception event (``exception``, or one made from the Execution's error and
        traceback when the handler ran in another process) and status ERROR."""
        api = self.api
        if api is None or not self.span.is_recording():
            return
        outcome = str(execution.outcome)
        self.span.set_attribute("jobqueue.job.outcome", outcome)
        if outcome not in FAILED_OUTCOMES:
            return
        error = str(execution.error or outcome)
        attributes: dict[str, str] = {}
        if exception is None:
            exception = JobFailed(error)
            # As the SDK names a type: its dotted path, without "builtins.".
            error_class = str(getattr(execution, "error_class", "") or "").removeprefix("builtins.")
            attributes["exception.type"] = error_class or "jobqueue.tracing.JobFailed"
            attributes["exception.stacktrace"] = str(execution.traceback or "")
        self.span.record_exception(exception, attributes=attributes or None)
        self.span.set_status(api.trace.Status(api.trace.StatusCode.ERROR, error.splitlines()[0][:300]))


class JobFailed(Exception):  # noqa: N818 - recorded on a span, read as "the job failed"
    """Stands for a failure whose exception object is in another process (a forked child)."""


_NO_SPAN = JobSpan()
#: :func:`job_span`'s context where there is no span to start nor trace to carry on.
_NOTHING_TO_TRACE = nullcontext(_NO_SPAN)


def job_span(job: Any) -> AbstractContextManager[JobSpan]:
    """Run an attempt of ``job`` inside a span that continues the job's trace (a new
    trace when the job has none), current for what the worker does meanwhile: chained
    jobs and jobs enqueued by the handler take their context from it."""
    api = _api()
    if api is None:
        return _NOTHING_TO_TRACE
    if not _provider_set(api):
        # No SDK: the span would record nothing, and starting it costs more than the rest
        # of a no-op job's bookkeeping in Python. The job's trace still travels on to what
        # the attempt enqueues, as the non-recording span would have carried it.
        return _carried(job.trace_context) if job.trace_context else _NOTHING_TO_TRACE
    return _span(job, api)


@contextmanager
def _carried(carrier: dict[str, str]) -> Iterator[JobSpan]:
    with attached(carrier):
        yield _NO_SPAN


@contextmanager
def _span(job: Any, api: SimpleNamespace) -> Iterator[JobSpan]:
    parent = api.propagate.extract(job.trace_context) if job.trace_context else None
    attributes = {
        "jobqueue.topic": job.topic_id,
        "jobqueue.job.id": str(job.pk),
        "jobqueue.job.attempt": job.attempts,
        "messaging.system": "jobqueue",
        "messaging.operation.type": "process",
        "messaging.destination.name": job.topic_id,
        "messaging.message.id": str(job.pk),
    }
    with api.tracer.start_as_current_span(
        f"process {job.topic_id}", context=parent, kind=api.trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield JobSpan(span, api)


@contextmanager
def attached(carrier: dict[str, str] | None) -> Iterator[None]:
    """Make the context in ``carrier`` current for the block (a forked child runs its
    handler inside the worker's span this way)."""
    api = _api()
    if api is None or not carrier:
        yield
        return
    token = api.context.attach(api.propagate.extract(carrier))
    try:
        yield
    finally:
        api.context.detach(token)


def flush() -> None:
    """Export the spans this process made (a forked child calls it before ``os._exit``)."""
    api = _api()
    provider = api.trace.get_tracer_provider() if api is not None else None
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(FLUSH_MILLIS)
