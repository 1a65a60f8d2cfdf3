"""The payload of a Celery-style job: ``{"args": [...], "kwargs": {...}}``.

``@shared_task`` jobs, the jobs of topics that forward to Celery and the jobs the
inbound bridge creates from Celery messages all carry this shape. A step of a
``|`` chain also carries ``"chain"``: the steps still to come (see :mod:`.canvas`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils import timezone


def make_payload(args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The payload of a call ``f(*args, **kwargs)``."""
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise TypeError(f"Task args must be a list or tuple, not {type(args).__name__}.")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"Task kwargs must be a mapping, not {type(kwargs).__name__}.")
    return {"args": list(args), "kwargs": dict(kwargs or {})}


def read_payload(payload: Any, what: str = "The job's payload") -> tuple[list[Any], dict[str, Any]]:
    """The ``args`` and ``kwargs`` of a job's payload; ``ValueError`` naming what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError(f'{what} must be {{"args": [...], "kwargs": {{...}}}}, not {payload!r:.200}.')
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(args, list):
        raise ValueError(f"{what}: 'args' must be a list, not {args!r:.200}.")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{what}: 'kwargs' must be an object, not {kwargs!r:.200}.")
    return args, kwargs


def iso_time(value: dt.datetime | float | int | str | None, what: str) -> str | None:
    """An ``eta``/``expires`` as Celery's headers carry it: an aware ISO 8601 time.

    A number is seconds from now (as Celery's ``countdown`` and ``expires`` are).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value!r}.")
        return (timezone.now() + dt.timedelta(seconds=float(value))).isoformat()
    if isinstance(value, dt.datetime):
        if timezone.is_naive(value):
            raise ValueError(f"{what} {value!r} is a naive datetime; give it a timezone.")
        return value.isoformat()
    raise TypeError(f"{what} must be a datetime or a number of seconds, not {value!r}.")
