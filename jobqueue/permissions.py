"""The permissions the admin and the API check when a user enqueues a job or sets up a chain.

Some topics need a permission to enqueue (the shell topic needs
``jobqueue.enqueue_shell_job``, :data:`jobqueue.constants.SHELL_PERMISSION`). A job of a topic whose static chain (its
``next_topic``, then that topic's, ...) leads into one of them becomes a job of
it, so enqueueing it, or pointing a ``next_topic`` at it, needs that permission
too. Code and management commands are trusted: ``Job.objects.enqueue()`` checks
no user. A chain read from a result's data never leads into such a topic (see
:mod:`jobqueue.chaining`).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

from . import registry
from .constants import SHELL_PERMISSION, SHELL_TOPIC
from .models import Topic
from .validation import TOPIC_NAME_RE

#: Who may see a job (and so what a pending entity's job holds).
VIEW_JOB = "jobqueue.view_job"
#: Who may change a job's priority, also by enqueueing a pending entity again.
CHANGE_PRIORITY = "jobqueue.change_priority_job"
#: Topics whose jobs only users holding the permission may enqueue, directly or through a chain.
PROTECTED_TOPICS = {SHELL_TOPIC: SHELL_PERMISSION}


def static_chain(name: str) -> list[str]:
    """``name`` and the topics its static chain leads to, in order, each once.

    A topic's ``next_topic`` is its row's, else its handler's (the row it gets on first use).
    """
    chain: list[str] = []
    current = name
    while isinstance(current, str) and TOPIC_NAME_RE.match(current) and current not in chain:
        chain.append(current)
        following = Topic.objects.filter(name=current).values_list("next_topic", flat=True).first()
        if following is None:
            spec = registry.get(current)
            following = spec.defaults.get("next_topic") if spec is not None else None
        current = following or ""
    return chain


def enqueue_refusal(user: Any, name: str) -> str | None:
    """Why ``user`` may not enqueue a job of topic ``name`` (``None``: they may)."""
    for topic in static_chain(name):
        permission = PROTECTED_TOPICS.get(topic)
        if permission is not None and not (user is not None and user.has_perm(permission)):
            if topic == name:
                return f"A job of {name!r} needs the {permission} permission."
            return f"Topic {name!r} chains into {topic!r}: its jobs need the {permission} permission."
    return None


def check_may_enqueue(user: Any, name: str) -> None:
    """Django's ``PermissionDenied`` unless ``user`` may enqueue a job of topic ``name``."""
    refusal = enqueue_refusal(user, name)
    if refusal is not None:
        raise PermissionDenied(refusal)


def is_protected(name: str) -> bool:
    """Whether a job of topic ``name`` is, or leads through its static chain to, a protected topic."""
    return any(topic in PROTECTED_TOPICS for topic in static_chain(name))
