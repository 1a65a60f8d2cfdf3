"""Riding out a lost Redis or database.

The loop meets an outage as an exception: :class:`Outage` logs it once, backs off
(exponentially, with jitter, at most about 5 s a pass) and, when a pass gets through
again, reports how long it lasted (the worker then rebuilds Redis from the database,
which may have lost data meanwhile). :func:`call_with_retry` does the same for the
worker's start-up steps.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis
from django.db import DatabaseError

logger = logging.getLogger("jobqueue.worker")


class Outage:
    """Whether, and since when, the worker has lost contact with Redis or the database."""

    def __init__(self) -> None:
        self.since: float | None = None  # monotonic time of the first failure

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def back_off(self, what: str, exc: Exception) -> None:
        """A pass failed for lack of ``what``: log the first failure, then wait."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            logger.error("Lost contact with %s: %s; retrying with backoff.", what, exc)
        spent = now - self.since
        time.sleep(min(0.2 * 2 ** min(spent, 5), 5.0) * random.uniform(0.8, 1.2))

    def end(self) -> None:
        """A pass got through again."""
        logger.warning("Connection restored after %.1fs; rebuilding Redis from the database.",
                       time.monotonic() - (self.since or time.monotonic()))
        self.since = None


def call_with_retry(func: Callable[[], Any], give_up: Callable[[], bool], attempts: int = 30) -> Any:
    """Call ``func``, retrying with backoff while Redis or the database is unreachable,
    up to ``attempts`` times or until ``give_up()`` says so (then the error is raised)."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            return func()
        except (redis.RedisError, DatabaseError) as exc:
            if attempt == attempts - 1 or give_up():
                raise
            logger.warning("Start-up step failed (%s); retrying.", exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
