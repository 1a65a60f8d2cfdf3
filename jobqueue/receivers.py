"""Signal receivers, connected in ``JobQueueConfig.ready()`` (this module is imported there)."""

from __future__ import annotations

from typing import Any

from django.core.signals import request_finished
from django.db.models.signals import post_delete, post_save

from .engine import sending
from .models import Topic
from .topic_manager import clear_topic_cache


def sync_topics_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """Create the Topic rows of registered handlers once the tables exist."""
    Topic.objects.sync_registered()


def connect() -> None:
    """Connect the Topic cache invalidation, and read a request's last push answer as it ends."""
    request_finished.connect(sending.release, dispatch_uid="jobqueue.sending.release")
    post_save.connect(clear_topic_cache, sender=Topic, dispatch_uid="jobqueue.topic_cache.save")
    post_delete.connect(clear_topic_cache, sender=Topic, dispatch_uid="jobqueue.topic_cache.delete")
