"""The handler registry: ``@handler("topic", ...)`` maps a topic to a callable.

Workers resolve handlers only through this registry (never from an import path
stored with a job). Every installed app's ``jobs`` module is imported by
:func:`autodiscover`, the way ``admin.autodiscover()`` imports ``admin`` modules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import autodiscover_modules

from .cron_schedule import CronSchedule
from .engine.flow import parse_rate
from .states import Isolation
from .validation import validate_positive_int, validate_priority, validate_topic_name

#: A topic's runtime settings: how its jobs run. The admin edits them under that heading.
RUNTIME_FIELDS = (
    "concurrency",
    "default_priority",
    "max_attempts",
    "timeout",
    "retry_backoff",
    "isolation",
    "next_topic",
    "cron",
    "rate",
    "key_concurrency",
    "fair",
    "key_from",
)
#: Topic fields a handler may set; an operator's change in the admin wins over them.
TOPIC_FIELDS = ("description", *RUNTIME_FIELDS)


@dataclasses.dataclass(frozen=True)
class HandlerSpec:
    topic: str
    func: Callable[..., Any]
    defaults: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


_registry: dict[str, HandlerSpec] = {}

_ALIASES = {"priority": "default_priority"}


def handler(topic: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the handler of ``topic``.

    Options set the topic's defaults: ``timeout`` (seconds), ``max_attempts``,
    ``isolation`` (``"inline"`` or ``"process"``), ``concurrency``, ``priority``,
    ``retry_backoff`` (seconds), ``next_topic``, ``cron`` and ``description``; flow
    control: ``rate`` (``"100/m"``, ``"5/s"``, ``"1000/h"``, a burst after a colon:
    ``"100/m:10"``), ``key_concurrency`` (running jobs per job key), ``fair`` (keys take
    turns) and ``key_from`` (the payload field a job's key is taken from).
    """
    validate_topic_name(topic)
    defaults: dict[str, Any] = {}
    for key, value in options.items():
        field = _ALIASES.get(key, key)
        if field not in TOPIC_FIELDS:
            raise TypeError(f"@handler({topic!r}): unknown option {key!r}; known: {', '.join(sorted(TOPIC_FIELDS))}")
        defaults[field] = value
    if "default_priority" in defaults:
        validate_priority(defaults["default_priority"])
    if defaults.get("isolation") not in (None, *Isolation.values):
        raise ValueError(f"@handler({topic!r}): isolation must be {' or '.join(map(repr, Isolation.values))}")
    if defaults.get("next_topic"):
        validate_topic_name(defaults["next_topic"])
    if defaults.get("cron"):
        CronSchedule(defaults["cron"])
    if defaults.get("rate"):
        parse_rate(defaults["rate"])
    if defaults.get("key_concurrency") is not None:
        validate_positive_int(defaults["key_concurrency"], "key_concurrency")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        previous = _registry.get(topic)
        if previous is not None and previous.name != f"{func.__module__}.{func.__qualname__}":
            raise ValueError(f"Topic {topic!r} already has a handler: {previous.name}")
        if "description" not in defaults and func.__doc__:
            defaults["description"] = func.__doc__.strip().splitlines()[0]
        _registry[topic] = HandlerSpec(topic=topic, func=func, defaults=defaults)
        return func

    return decorator


_resolvers: list[Callable[[str], HandlerSpec | None]] = []


def register(topic: str, func: Callable[..., Any], **options: Any) -> HandlerSpec:
    """Register ``func`` for ``topic`` without a decorator (same options as :func:`handler`)."""
    handler(topic, **options)(func)
    return _registry[topic]


def add_resolver(resolver: Callable[[str], HandlerSpec | None]) -> None:
    """Add a fallback that provides handlers for topics with no ``@handler``
    (script topics, the shell topic, ``django.tasks`` queues)."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def remove_resolver(resolver: Callable[[str], HandlerSpec | None]) -> None:
    """Take back a resolver given to :func:`add_resolver` (nothing if it was not there)."""
    if resolver in _resolvers:
        _resolvers.remove(resolver)


def get(topic: str) -> HandlerSpec | None:
    """The handler of ``topic``: a registered one, else one a resolver provides."""
    spec = _registry.get(topic)
    if spec is not None:
        return spec
    for resolver in _resolvers:
        spec = resolver(topic)
        if spec is not None:
            return spec
    return None


def topics() -> list[str]:
    return sorted(_registry)


def unregister(topic: str) -> None:
    _registry.pop(topic, None)


def specs() -> list[HandlerSpec]:
    """Every handler registered with :func:`handler` or :func:`register` (not resolvers')."""
    return list(_registry.values())


def autodiscover() -> None:
    """Import the ``jobs`` module of every installed app."""
    autodiscover_modules("jobs")
