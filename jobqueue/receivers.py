"""Signal receivers, connected in ``JobQueueConfig.ready()``."""

from __future__ import annotations

from typing import Any


def sync_topics_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """Create the Topic rows of registered handlers once the tables exist."""
    from . import registry

    registry.sync_topics()


def connect() -> None:
    """Connect the Topic cache invalidation."""
    from django.db.models.signals import post_delete, post_save

    from .managers import clear_topic_cache
    from .models import Topic

    post_save.connect(clear_topic_cache, sender=Topic, dispatch_uid="jobqueue.topic_cache.save")
    post_delete.connect(clear_topic_cache, sender=Topic, dispatch_uid="jobqueue.topic_cache.delete")
