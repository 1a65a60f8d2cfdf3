"""Signal receivers, connected in ``JobQueueConfig.ready()``."""

from __future__ import annotations

from typing import Any


def sync_topics_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """Create the Topic rows of registered handlers once the tables exist."""
    from . import registry

    registry.sync_topics()


def connect() -> None:
    """Connect the receivers that chain a finished job into its next topic."""
    from .chaining import connect_chaining

    connect_chaining()
