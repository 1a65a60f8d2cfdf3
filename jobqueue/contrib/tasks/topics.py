"""Which topics are ``django.tasks`` queues: a registry object that backends fill as they
are created (never at import)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import registry


class TaskTopics:
    """The topics whose handler is the task runner.

    A backend that lists its ``QUEUES`` adds one topic per queue (:meth:`add`); one that
    lists none accepts any queue under its ``TOPIC_PREFIX`` (:meth:`add_prefix`), and this
    object then provides the handler of such a topic to :func:`jobqueue.registry.get` on
    demand (:meth:`resolve`).
    """

    def __init__(self, handler: Callable[[Any], Any]) -> None:
        self.handler = handler
        self._topics: set[str] = set()
        self._prefixes: dict[str, dict[str, Any]] = {}

    def add(self, topic: str, **defaults: Any) -> None:
        """Register ``topic`` as a task queue with the topic defaults ``defaults``."""
        registry.register(topic, self.handler, **defaults)
        self._topics.add(topic)

    def add_prefix(self, prefix: str, **defaults: Any) -> None:
        """Make every topic that starts with ``prefix`` (and is longer) a task queue."""
        self._prefixes[prefix] = defaults
        registry.add_resolver(self.resolve)

    def discard(self, topic: str) -> None:
        """Forget ``topic``, and its handler if it is the task runner."""
        self._topics.discard(topic)
        if self.runs(registry.get(topic)):
            registry.unregister(topic)

    def discard_prefix(self, prefix: str) -> None:
        self._prefixes.pop(prefix, None)
        if not self._prefixes:
            registry.remove_resolver(self.resolve)

    def resolve(self, topic: str) -> registry.HandlerSpec | None:
        """The handler of ``topic`` if it falls under a prefix (a :mod:`~jobqueue.registry` resolver)."""
        prefix = self._prefix_of(topic)
        if prefix is None:
            return None
        defaults = {**self._prefixes[prefix], "description": f"django.tasks queue {topic[len(prefix):]!r}"}
        return registry.HandlerSpec(topic=topic, func=self.handler, defaults=defaults)

    def runs(self, spec: registry.HandlerSpec | None) -> bool:
        """Whether ``spec`` is the task runner's."""
        return spec is not None and spec.func is self.handler

    def __contains__(self, topic: object) -> bool:
        return isinstance(topic, str) and (topic in self._topics or self._prefix_of(topic) is not None)

    @property
    def topics(self) -> frozenset[str]:
        """The topics added one by one."""
        return frozenset(self._topics)

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(self._prefixes)

    def _prefix_of(self, topic: str) -> str | None:
        for prefix in self._prefixes:
            if topic.startswith(prefix) and len(topic) > len(prefix):
                return prefix
        return None
