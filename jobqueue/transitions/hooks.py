"""Follow-ups that other parts of jobqueue attach to every job's transitions.

A transition calls its built-in follow-ups (chaining, dependency release)
directly; a part that sits above the transitions (the ``django.tasks`` bridge)
adds a :class:`JobHook` to :data:`hooks` instead of connecting a signal. The
transition then calls it directly too, and its fast path asks
:meth:`Hooks.acts_on` whether anything must hear of a job at all. Signals are
left to users.
"""

from __future__ import annotations

from typing import Any, Protocol


class JobHook(Protocol):
    """What a follow-up attached to :data:`hooks` provides."""

    def acts_on(self, job: Any) -> bool:
        """Whether this hook has anything to do for ``job`` (cheap: no query)."""

    def started(self, job: Any) -> None:
        """``job`` was claimed and is about to run (called outside any transaction)."""

    def finished(self, job: Any) -> None:
        """``job`` reached a final state; called inside the transaction that recorded
        it (use ``transaction.on_commit`` for anything that must see the commit)."""


class Hooks:
    """The hooks attached to job transitions, by key (adding a key again replaces it)."""

    def __init__(self) -> None:
        self._hooks: dict[str, JobHook] = {}

    def add(self, key: str, hook: JobHook) -> None:
        self._hooks[key] = hook

    def discard(self, key: str) -> None:
        self._hooks.pop(key, None)

    def __contains__(self, key: str) -> bool:
        return key in self._hooks

    def __len__(self) -> int:
        return len(self._hooks)

    def acts_on(self, job: Any) -> bool:
        return any(hook.acts_on(job) for hook in self._hooks.values())

    def started(self, job: Any) -> None:
        for hook in list(self._hooks.values()):
            if hook.acts_on(job):
                hook.started(job)

    def finished(self, job: Any) -> None:
        for hook in list(self._hooks.values()):
            if hook.acts_on(job):
                hook.finished(job)


#: The hooks every transition calls.
hooks = Hooks()
