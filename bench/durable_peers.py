"""The durable peers: procrastinate and django-tasks' database backend (django-tasks-db).

Both write a job row to the benchmark's database on enqueue, as jobqueue does, and
both run the same job body (:func:`bench.common.run`). Each is set up only when it
is installed (``requirements/bench.txt``); procrastinate needs PostgreSQL, so it is
left out of a SQLite run. ``bench/settings.py`` adds their apps to ``INSTALLED_APPS``.
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django.setup()

from django.conf import settings  # noqa: E402

from bench import common  # noqa: E402

#: The queue both peers use (each has its own table, so the names do not meet).
QUEUE_NAME = "bench"

HAS_PROCRASTINATE = "procrastinate.contrib.django" in settings.INSTALLED_APPS
HAS_TASKS_DB = "django_tasks_db" in settings.INSTALLED_APPS

procrastinate_noop: Any = None
tasks_db_noop: Any = None

if HAS_PROCRASTINATE:
    from procrastinate.contrib.django import app as procrastinate_app

    @procrastinate_app.task(name="bench.noop", queue=QUEUE_NAME)
    def procrastinate_noop(**kwargs: Any) -> None:
        """procrastinate's no-op task."""
        common.run(**kwargs)


if HAS_TASKS_DB:
    from django_tasks_db.compat import task_backends

    _task = task_backends  # noqa: F841 (the backend registry is loaded with the task decorator)
    try:
        from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from django_tasks import task  # type: ignore[no-redef,unused-ignore]

    @task(backend="db", queue_name=QUEUE_NAME)
    def tasks_db_noop(**kwargs: Any) -> None:
        """django-tasks-db's no-op task."""
        common.run(**kwargs)
