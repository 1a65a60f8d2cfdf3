"""Topic rows: created from registered handlers, and found by name (cached briefly per
process, as every ``enqueue()`` needs its topic's row)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.db import models, router, transaction

from . import registry
from .conf import settings
from .exceptions import UnknownTopic
from .validation import validate_topic_name

if TYPE_CHECKING:
    from .models import Topic

#: Seconds a resolved Topic row is reused by enqueue() in this process (saves a query per job).
TOPIC_CACHE_SECONDS = 2.0
_topic_cache: dict[str, tuple[Topic, float]] = {}


def clear_topic_cache(*args: Any, **kwargs: Any) -> None:
    """Forget cached Topic rows (connected to Topic's post_save and post_delete)."""
    _topic_cache.clear()


class TopicManager(models.Manager["Topic"]):
    def setting_defaults(self) -> dict[str, Any]:
        """A new topic's values from ``JOBQUEUE`` (``DEFAULT_MAX_ATTEMPTS`` and the like)."""
        return {
            "max_attempts": settings.DEFAULT_MAX_ATTEMPTS,
            "timeout": settings.DEFAULT_TIMEOUT,
            "retry_backoff": settings.DEFAULT_RETRY_BACKOFF,
            "isolation": settings.DEFAULT_ISOLATION,
        }

    def setting_options(self, name: str) -> dict[str, Any]:
        """The topic's options from ``JOBQUEUE["TOPIC_OPTIONS"][name]`` (over its handler's)."""
        options = dict((settings.TOPIC_OPTIONS or {}).get(name) or {})
        unknown = set(options) - set(registry.TOPIC_FIELDS)
        if unknown:
            raise ValueError(f"TOPIC_OPTIONS[{name!r}]: unknown option(s) {', '.join(sorted(unknown))}")
        return options

    def sync(self, spec: registry.HandlerSpec) -> Topic:
        """Create or update the Topic row of a registered handler, keeping fields an operator changed."""
        wanted = {**spec.defaults, **self.setting_options(spec.topic)}
        defaults = {**self.setting_defaults(), **wanted}
        topic, created = self.get_or_create(name=spec.topic, defaults=defaults)
        if created:
            return topic
        overrides = set(topic.operator_overrides or [])
        changed = [f for f, v in wanted.items() if f not in overrides and getattr(topic, f) != v]
        if changed:
            for field in changed:
                setattr(topic, field, wanted[field])
            topic.save(update_fields=[*changed, "updated_at"])
        return topic

    def sync_registered(self) -> list[Topic]:
        """Make sure every registered handler's topic has its row (see :meth:`sync`)."""
        return [self.sync(spec) for spec in registry.specs()]

    def resolve(self, name: Any) -> Topic:
        """The Topic row for ``name``, created from its handler if it has one.

        Raises :class:`UnknownTopic` (listing the known topics) otherwise.
        """
        cached = _topic_cache.get(name) if type(name) is str else None  # a name cached was valid
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        validate_topic_name(name)
        topic = self.filter(name=name).first()
        if topic is not None:
            entry = (topic, time.monotonic() + TOPIC_CACHE_SECONDS)
            # The row may have been created by the current transaction: cache it only once that
            # commits, or a rollback would leave enqueue() pointing at a topic that doesn't exist.
            using = router.db_for_write(self.model)
            transaction.on_commit(lambda: _topic_cache.__setitem__(name, entry), using=using)
            return topic
        spec = registry.get(name)
        if spec is not None:
            return self.sync(spec)
        if settings.ALLOW_UNREGISTERED_TOPICS:
            defaults = {**self.setting_defaults(), **self.setting_options(name)}
            return self.get_or_create(name=name, defaults=defaults)[0]
        known = sorted(set(self.values_list("name", flat=True)) | set(registry.topics()))
        raise UnknownTopic(f"Unknown topic {name!r}. Known topics: {', '.join(known) or '(none)'}.")
