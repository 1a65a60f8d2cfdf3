"""Signatures and linear chains: ``add.s(2, 2) | mul.s(4)`` as jobs chained with ``Next``.

``apply_async()`` enqueues the chain's first step (``Job.objects.enqueue()``, so in the
caller's transaction) with the steps still to come in its payload's ``"chain"``. When
a step's function returns, its handler returns ``Next`` into the next step's topic,
with the value as that step's first argument (not for an immutable ``.si()``): the
next job is created in the transaction that records the success, as for any ``Next``.

Groups and chords are not provided (:func:`group`, :func:`chord` raise
:class:`~.exceptions.NotSupported` naming jobqueue's ``Workflow`` and
``enqueue_many()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ...chaining import Next, next_jobs
from .exceptions import NotSupported
from .payload import iso_time, make_payload
from .result import JobResult

if TYPE_CHECKING:
    from .task import Task

#: ``apply_async()`` options passed to ``Job.objects.enqueue()`` as they are.
ENQUEUE_OPTIONS = frozenset({"entity_id", "depends_on", "max_attempts", "timeout", "parent", "delay", "run_after"})
#: Celery options with no effect here, and why (see README, "Coming from Celery").
IGNORED_OPTIONS = {
    "queue": "workers choose topics, not queues: every task is its own topic (jobworker --topics)",
    "routing_key": "as for queue",
    "exchange": "as for queue",
    "retry": "enqueue() writes a row in your transaction; there is no publish to retry",
    "retry_policy": "as for retry",
    "ignore_result": "a job's result is always stored",
}
#: Celery options that are refused, with what to use instead.
UNSUPPORTED_OPTIONS = {
    "expires": "jobs do not expire; cancel a pending one with job.cancel(), or pass a deadline in the "
    "arguments and check it in the task",
    "link": "chain the next step with | (add.s(1) | mul.s(2)), or return Next(...) from the task",
    "link_error": "listen to the jobqueue.signals.job_failed signal",
    "task_id": "every job gets its own id (JobResult.id); to run a call once per key, pass entity_id=",
    "headers": "put what the task needs in its arguments",
    "shadow": "the job's topic is its name",
    "chord": "use jobqueue.workflow.Workflow (jobs that depend on others)",
    "group_id": "use Job.objects.enqueue_many() or jobqueue.workflow.Workflow",
    "compression": "payloads are stored as JSON in the database",
}


def enqueue_options(options: Mapping[str, Any], call: str = "apply_async()") -> dict[str, Any]:
    """Celery's ``apply_async()`` options as ``Job.objects.enqueue()`` arguments.

    ``countdown`` becomes ``delay``, ``eta`` becomes ``run_after``, ``priority`` is
    jobqueue's priority (-100..100, higher first), jobqueue's own options
    (:data:`ENQUEUE_OPTIONS`) pass through, :data:`IGNORED_OPTIONS` are dropped and
    :data:`UNSUPPORTED_OPTIONS` raise :class:`NotSupported`.
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "countdown":
            if value is not None:
                out["delay"] = value
        elif key == "eta":
            if value is not None:
                out["run_after"] = value
        elif key == "priority":
            if value is not None:
                out["priority"] = value
        elif key in ENQUEUE_OPTIONS:
            out[key] = value
        elif key == "serializer":
            if value not in (None, "json"):
                raise NotSupported(f"{call}: serializer={value!r} is not supported; jobs are stored as JSON.")
        elif key in IGNORED_OPTIONS:
            continue
        elif key in UNSUPPORTED_OPTIONS:
            raise NotSupported(f"{call}: {key}= is not supported: {UNSUPPORTED_OPTIONS[key]}.")
        else:
            raise TypeError(f"{call} got an unexpected option {key!r}.")
    return out


#: What a later step of a chain may set (it is enqueued by a worker, from JSON).
STEP_OPTIONS = ("priority", "countdown", "eta")


class Signature:
    """A task with (some of) its arguments and options: ``add.s(2)``, ``add.si(2, 2)``."""

    def __init__(
        self,
        task: Task,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
    ):
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise TypeError(f"Task args must be a list or tuple, not {type(args).__name__}.")
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable

    @property
    def name(self) -> str:
        return self.task.name

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.name}{'.si' if self.immutable else '.s'}({call})"

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any) -> Signature:
        """A copy with ``args`` before its own and ``kwargs`` over its own (not for an immutable one)."""
        if self.immutable:
            args, kwargs = (), None
        return Signature(
            self.task,
            (*args, *self.args),
            {**self.kwargs, **(kwargs or {})},
            {**self.options, **options},
            self.immutable,
        )

    def set(self, **options: Any) -> Signature:
        """Set call options (``countdown``, ``priority``...) and return the signature."""
        self.options.update(options)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, as Celery does."""
        sig = self.clone(args, kwargs)
        return self.task(*sig.args, **sig.kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> JobResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> JobResult:
        """Enqueue the call as a job; see :func:`enqueue_options` for the options."""
        return enqueue_chain([self.clone(args or (), kwargs, **options)])

    def __or__(self, other: Signature | Chain) -> Chain:
        return Chain(self, other)

    def link(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupported(f"{self!r}.link(): {UNSUPPORTED_OPTIONS['link']}.")

    def link_error(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupported(f"{self!r}.link_error(): {UNSUPPORTED_OPTIONS['link_error']}.")

    def step(self) -> dict[str, Any]:
        """This signature as a later step of a chain, stored in the previous job's payload."""
        options: dict[str, Any] = {}
        for key, value in self.options.items():
            if value is None:
                continue
            if key in STEP_OPTIONS:
                options[key] = iso_time(value, "eta") if key == "eta" else value
            elif key not in IGNORED_OPTIONS:
                raise NotSupported(
                    f"{self!r}: a later step of a chain takes only {', '.join(STEP_OPTIONS)}, not {key}= "
                    f"(its job is created by a worker when the step before it succeeds)."
                )
        return {
            **make_payload(self.args, self.kwargs),
            "topic": self.name,
            "immutable": self.immutable,
            "options": options,
        }


class Chain:
    """Signatures run one after the other, each given the previous one's result."""

    def __init__(self, *tasks: Signature | Chain):
        steps: list[Signature] = []
        for task in tasks:
            if isinstance(task, Chain):
                steps += task.tasks
            elif isinstance(task, Signature):
                steps.append(task)
            else:
                raise TypeError(f"A chain is made of signatures (task.s(...)), not {task!r}.")
        if not steps:
            raise ValueError("A chain needs at least one signature.")
        self.tasks: list[Signature] = steps

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))

    def __or__(self, other: Signature | Chain) -> Chain:
        return Chain(self, other)

    def delay(self, *args: Any, **kwargs: Any) -> JobResult:
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> JobResult:
        """Enqueue the first step (``args`` before its own); the others follow as it succeeds."""
        first = self.tasks[0].clone(args or (), kwargs, **options)
        return enqueue_chain([first, *self.tasks[1:]])


def chain(*tasks: Signature | Chain) -> Chain:
    """``chain(a.s(), b.s())`` is ``a.s() | b.s()``."""
    return Chain(*tasks)


def group(*args: Any, **kwargs: Any) -> Any:
    raise NotSupported(
        "group() is not supported: enqueue the calls one by one (each .delay() is a job), or at once with "
        "Job.objects.enqueue_many(); to wait for all of them, use jobqueue.workflow.Workflow."
    )


def chord(*args: Any, **kwargs: Any) -> Any:
    raise NotSupported(
        "chord() is not supported: use jobqueue.workflow.Workflow, where a job that depends on others "
        "(depends_on=) runs once they have all succeeded."
    )


def enqueue_chain(steps: list[Signature]) -> JobResult:
    """Enqueue the first step, carrying the others in its payload."""
    from ...models import Job  # the models may not be loaded when a tasks module is imported

    first, rest = steps[0], steps[1:]
    payload = make_payload(first.args, first.kwargs)
    if rest:
        payload["chain"] = [sig.step() for sig in rest]
    job = Job.objects.enqueue(first.name, payload, **enqueue_options(first.options))
    return JobResult(job.pk, steps=len(steps), job=job)


def next_step(result: Any, steps: list[dict[str, Any]]) -> Next:
    """What a chain step's handler returns: ``Next`` into the following step."""
    if next_jobs(result):
        raise NotSupported(
            "A task in a chain returned Next(...): end the chain there, or make the next topic a step of it."
        )
    step, rest = steps[0], steps[1:]
    args = list(step.get("args", []))
    if not step.get("immutable"):
        args.insert(0, result)
    payload = make_payload(args, step.get("kwargs"))
    if rest:
        payload["chain"] = rest
    options = step.get("options", {})
    enqueue: dict[str, Any] = {}
    if options.get("priority") is not None:
        enqueue["priority"] = options["priority"]
    if options.get("countdown") is not None:
        enqueue["delay"] = options["countdown"]
    elif options.get("eta"):
        eta = parse_datetime(options["eta"])
        if eta is not None:
            enqueue["delay"] = max(0.0, (eta - timezone.now()).total_seconds())
    return Next(step["topic"], payload, **enqueue)
