"""System checks of the Celery bridge's settings (ids ``jobqueue.E301``...)."""

from __future__ import annotations

import importlib.util
from typing import Any

from django.core.checks import CheckMessage, Error

from jobqueue import registry
from jobqueue.conf import settings
from jobqueue.exceptions import InvalidJob
from jobqueue.validation import validate_topic_name


def _kombu_installed() -> bool:
    try:
        return importlib.util.find_spec("kombu") is not None
    except ValueError:  # already imported, without a spec
        return True


def check_bridge_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``JOBQUEUE["CELERY_TASKS"]`` maps task names to topics that exist; kombu is installed."""
    errors: list[CheckMessage] = []
    if not _kombu_installed():
        errors.append(Error(
            "jobqueue.contrib.celery is installed but kombu is not.",
            hint='pip install "django-jobqueue[celery]"', id="jobqueue.E304",
        ))
    try:
        tasks = settings.user_settings().get("CELERY_TASKS", {})
    except TypeError:
        return errors  # jobqueue.E001 says so
    if not isinstance(tasks, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                              for k, v in tasks.items()):
        errors.append(Error(
            f"JOBQUEUE['CELERY_TASKS'] must map Celery task names to topic names, not {tasks!r}.",
            hint="For example {'app.tasks.resize': 'images.resize'}.", id="jobqueue.E301",
        ))
        return errors
    for task, topic in sorted(tasks.items()):
        try:
            validate_topic_name(topic)
        except InvalidJob as exc:
            errors.append(Error(
                f"JOBQUEUE['CELERY_TASKS'] maps {task!r} to {topic!r}, which is not a topic name: {exc}",
                hint="Topic names are 1-100 characters of a-z 0-9 _ . -, starting with a letter or digit.",
                id="jobqueue.E302",
            ))
            continue
        if registry.get(topic) is None and not settings.ALLOW_UNREGISTERED_TOPICS:
            errors.append(Error(
                f"JOBQUEUE['CELERY_TASKS'] maps {task!r} to topic {topic!r}, which has no handler.",
                hint="Register one with @handler(...) in a jobs module, or fix the mapping.",
                id="jobqueue.E303",
            ))
    return errors
