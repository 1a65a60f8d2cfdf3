"""OpenTelemetry: a job carries the trace it was enqueued in, the worker runs each attempt
in a span continuing it, and chained jobs carry it on. Spans are read from the SDK's
in-memory exporter; the worker is a real one, on the real Redis and database."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobqueue import handler, tracing
from jobqueue.managers import COPY_THRESHOLD
from jobqueue.models import Job

from .workerutil import REPO_ROOT, child_env, jobqueue_settings, run_worker

pytestmark = pytest.mark.django_db(transaction=True)


@handler("traced_spawn", isolation="process", max_attempts=1)
def traced_spawn(job):
    """From the forked child it runs in: makes a span of its own and enqueues a job."""
    with trace.get_tracer("tests").start_as_current_span("inside the handler"):
        pass
    return {"spawned": str(Job.objects.enqueue("echo", {"from": "child"}).pk)}


class _Listening:
    """Whether a test of this module listens (the tracer provider stays installed)."""

    on = False


class _Switch(SimpleSpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        if _Listening.on:
            super().on_end(span)


class _HeldUntilFlushed(SpanProcessor):
    """Holds ended spans until a flush, then appends them as JSON lines to ``path``: as a
    batching processor sends spans, without its thread; how a forked child's spans reach
    the test."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.held: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if _Listening.on:
            self.held.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        held, self.held = self.held, []
        if self.path is not None:
            with open(self.path, "a") as out:
                for span in held:
                    parent = span.parent.span_id if span.parent else None
                    out.write(json.dumps({"name": span.name, "trace_id": span.context.trace_id,
                                          "parent_span_id": parent}) + "\n")
        return True


_EXPORTER = InMemorySpanExporter()
_HELD = _HeldUntilFlushed()


@pytest.fixture
def spans(tmp_path):
    """The SDK's in-memory exporter, behind the process's tracer provider; spans that
    ``_HELD`` holds reach ``_HELD.path`` when flushed."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_Switch(_EXPORTER))
        provider.add_span_processor(_HELD)
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _HELD.held, _HELD.path = [], tmp_path / "flushed.jsonl"
    _Listening.on = True
    yield _EXPORTER
    _Listening.on = False
    _HELD.held, _HELD.path = [], None
    _EXPORTER.clear()


def job_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("process ")]


def traceparent(job: Job) -> tuple[int, int]:
    """The trace id and parent span id stored with ``job``."""
    return traceparent_of(job.trace_context)


def traceparent_of(carrier: dict[str, str]) -> tuple[int, int]:
    _version, trace_id, span_id, _flags = carrier["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16)


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_a_chain_of_three_topics_is_one_trace(spans, isolation):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        first = Job.objects.enqueue("stage1", {"n": 0})
    run_worker("stage1", "stage2", "stage3", isolation=isolation)

    second = Job.objects.get(parent=first)
    third = Job.objects.get(parent=second)
    assert third.status == "succeeded"
    by_topic = {s.attributes["jobqueue.topic"]: s for s in job_spans(spans)}
    assert sorted(by_topic) == ["stage1", "stage2", "stage3"]
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in by_topic.values()} == {trace_id}
    # Each job's span is a child of the span that enqueued it: the request, then the
    # span of the job it was chained from.
    assert by_topic["stage1"].parent.span_id == request.get_span_context().span_id
    assert by_topic["stage2"].parent.span_id == by_topic["stage1"].context.span_id
    assert by_topic["stage3"].parent.span_id == by_topic["stage2"].context.span_id
    for job, parent_span in ((first, request.get_span_context()), (second, by_topic["stage1"].context),
                             (third, by_topic["stage2"].context)):
        assert traceparent(job) == (trace_id, parent_span.span_id)
    for job in (first, second, third):
        span = by_topic[job.topic_id]
        assert span.kind == SpanKind.CONSUMER
        assert span.name == f"process {job.topic_id}"
        assert span.attributes["jobqueue.job.id"] == str(job.pk)
        assert span.attributes["jobqueue.job.attempt"] == 1
        assert span.attributes["jobqueue.job.outcome"] == "succeeded"
        assert span.attributes["messaging.destination.name"] == job.topic_id
        assert span.status.status_code == StatusCode.UNSET
        assert not span.events


def test_a_failed_attempt_is_recorded_on_its_span(spans):
    job = Job.objects.enqueue("flaky", {"succeed_on": 2})
    run_worker("flaky")
    job.refresh_from_db()
    assert job.status == "succeeded"
    first, second = sorted(job_spans(spans), key=lambda s: s.attributes["jobqueue.job.attempt"])
    assert first.attributes["jobqueue.job.outcome"] == "retry"
    assert first.status.status_code == StatusCode.ERROR
    assert first.status.description == "RuntimeError: attempt 1 failed"
    (event,) = first.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "attempt 1 failed"
    assert 'raise RuntimeError(f"attempt {job.attempt} failed")' in event.attributes["exception.stacktrace"]
    assert second.attributes["jobqueue.job.outcome"] == "succeeded"
    assert second.status.status_code == StatusCode.UNSET
    # The job had no trace when enqueued: its attempts start one, the retry continues nothing else.
    assert job.trace_context is None
    assert first.parent is None and second.parent is None


def test_a_failure_in_a_child_process_is_recorded_with_its_traceback(spans):
    job = Job.objects.enqueue("loud", {"fail": True}, max_attempts=1)
    run_worker("loud")
    assert Job.objects.get(pk=job.pk).status == "failed"
    (span,) = job_spans(spans)
    assert span.attributes["jobqueue.job.outcome"] == "failed"
    assert span.status.status_code == StatusCode.ERROR
    (event,) = span.events
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "ValueError: boom"
    assert 'raise ValueError("boom")' in event.attributes["exception.stacktrace"]


def test_a_handler_in_a_child_process_runs_inside_the_workers_span(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request") as request:
        job = Job.objects.enqueue("traced_spawn")
    run_worker("traced_spawn")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    spawned = Job.objects.get(pk=job.result["spawned"])
    (span,) = job_spans(spans)
    trace_id = request.get_span_context().trace_id
    assert traceparent(spawned) == (trace_id, span.context.span_id)
    # The child's own span, exported by the flush before it exits.
    exported = [json.loads(line) for line in _HELD.path.read_text().splitlines()]
    assert {"name": "inside the handler", "trace_id": trace_id, "parent_span_id": span.context.span_id} in exported


def test_without_an_active_span_nothing_is_stored(spans):
    job = Job.objects.enqueue("echo", {})
    assert job.trace_context is None
    assert Job.objects.get(pk=job.pk).trace_context is None
    with trace.get_tracer("tests").start_as_current_span("request") as request:
        # Enough jobs for COPY on PostgreSQL (managers.COPY_THRESHOLD).
        many = Job.objects.enqueue_many([("echo", {"i": i}) for i in range(COPY_THRESHOLD)])
    trace_id = request.get_span_context().trace_id
    stored = Job.objects.filter(pk__in=[j.pk for j in many]).values_list("trace_context", flat=True)
    assert [traceparent_of(c)[0] for c in stored] == [trace_id] * COPY_THRESHOLD


def test_the_setting_turns_tracing_off(spans):
    with jobqueue_settings(OPENTELEMETRY=False):
        with trace.get_tracer("tests").start_as_current_span("request"):
            first = Job.objects.enqueue("stage1", {"n": 0})
        run_worker("stage1", "stage2", "stage3")
    assert first.trace_context is None
    assert not Job.objects.filter(trace_context__isnull=False).exists()
    assert Job.objects.filter(status="succeeded").count() == 3
    assert job_spans(spans) == []


def test_without_opentelemetry_nothing_changes_and_nothing_is_imported():
    """In a process where ``opentelemetry`` cannot be imported, a chain runs as before
    and no module of it was ever loaded."""
    script = textwrap.dedent("""
        import json, sys
        sys.modules["opentelemetry"] = None  # any import of it raises ImportError
        import django
        django.setup()
        from jobqueue.models import Job
        from jobqueue.worker import Worker
        first = Job.objects.enqueue("stage1", {"n": 0})
        Worker(topics=["stage1", "stage2", "stage3"], burst=True, install_signals=False).run()
        print(json.dumps({
            "statuses": sorted(Job.objects.values_list("status", flat=True)),
            "contexts": list(Job.objects.values_list("trace_context", flat=True)),
            "loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry.")),
        }))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"statuses": ["succeeded"] * 3, "contexts": [None] * 3, "loaded": []}


def test_the_seams_do_nothing_when_tracing_is_off(spans):
    with jobqueue_settings(OPENTELEMETRY=False):
        with trace.get_tracer("tests").start_as_current_span("request"):
            assert tracing.capture() is None
        job = Job(topic_id="echo", trace_context={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        with tracing.job_span(job) as span:
            assert not trace.get_current_span().get_span_context().is_valid
            assert span.span is None
        with tracing.attached(job.trace_context):
            assert not trace.get_current_span().get_span_context().is_valid


def test_with_the_api_but_no_sdk_a_trace_still_travels_down_a_chain():
    """With no tracer provider set the worker starts no span, yet a job enqueued inside a
    trace (here a remote parent's context) passes it on to every job it chains into, and
    a job enqueued outside one passes nothing on."""
    script = textwrap.dedent("""
        import json, sys
        import django
        django.setup()
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        from jobqueue import tracing
        from jobqueue.models import Job
        from jobqueue.worker import Worker
        parent = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1))
        with trace.use_span(NonRecordingSpan(parent)):
            traced = Job.objects.enqueue("stage1", {"n": 0})
        untraced = Job.objects.enqueue("stage1", {"n": 10})
        Worker(topics=["stage1", "stage2", "stage3"], burst=True, install_signals=False).run()
        print(json.dumps({
            "provider_set": tracing._provider_set(tracing._load()),
            "statuses": sorted(Job.objects.values_list("status", flat=True)),
            "contexts": sorted(
                (c or {}).get("traceparent", "") for c in Job.objects.values_list("trace_context", flat=True)
            ),
        }))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    traced = "00-" + f"{0x1234:032x}" + "-" + f"{0x5678:016x}" + "-01"
    assert report == {"provider_set": False, "statuses": ["succeeded"] * 6, "contexts": [""] * 3 + [traced] * 3}


def test_a_forked_job_finds_the_api_loaded_by_the_zygote(tmp_path, monkeypatch):
    """The zygote loads the OpenTelemetry API once (tracing.preload): a child forked per job
    finds it loaded, instead of importing it (with its propagators' entry points) anew."""
    import os
    from importlib import metadata

    loads = tmp_path / "loads"
    real = metadata.version

    def version(name):
        if name == "django-jobqueue":  # read by tracing._load, once per process that loads the API
            with open(loads, "a") as f:
                f.write(f"{os.getpid()}\n")
        return real(name)

    jobs = [Job.objects.enqueue("echo", {"n": n}) for n in range(3)]
    monkeypatch.setattr(metadata, "version", version)
    tracing._load.cache_clear()  # as in a worker that has not traced anything yet
    try:
        run_worker("echo", isolation="process")
    finally:
        tracing._load.cache_clear()
    assert {Job.objects.get(pk=job.pk).status for job in jobs} == {"succeeded"}
    pids = loads.read_text().split() if loads.exists() else []
    assert len([pid for pid in pids if pid != str(os.getpid())]) == 1  # the zygote's, no child's
