"""A cron expression: ``CronSchedule("*/5 * * * *").next_after(now)``.

Kept apart from the scheduler (:mod:`jobqueue.cron`, which reads topics and enqueues
jobs) so that ``@handler(cron=...)`` can check its expression without the models.

Expressions are read and searched by ``cronsim``, the cron library of healthchecks.io:
small, typed, without dependencies, able to search backwards, and faithful to Debian's
Vixie cron, DST transitions included (``croniter``, maintained again by pallets-eco,
reads ``*/9`` in a day field unlike Vixie cron and needs ``python-dateutil``).
"""

from __future__ import annotations

import datetime as dt

from cronsim import CronSim, CronSimError


class CronSchedule:
    """``CronSchedule("*/5 * * * *").next_after(now)`` gives the next matching minute."""

    def __init__(self, expression: str):
        if len(expression.split()) != 5:
            raise ValueError(
                f"Cron expression {expression!r} must have 5 fields (minute hour day month weekday)."
            )
        try:
            CronSim(expression, dt.datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"Invalid cron expression {expression!r}: {exc}.") from None
        self.expression = expression

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``when`` (same time zone)."""
        try:
            return next(CronSim(self.expression, when.replace(second=0, microsecond=0)))
        except StopIteration:
            raise ValueError(f"Cron expression {self.expression!r} never matches.") from None

    def previous(self, when: dt.datetime) -> dt.datetime | None:
        """The last matching minute at or before ``when`` (``None`` if none in 50 years)."""
        # Backwards, cronsim starts strictly before its start: one second past the minute.
        # (replace(), not arithmetic, keeps ``fold``: which pass of a repeated hour.)
        start = when.replace(second=1, microsecond=0)
        return next(CronSim(self.expression, start, reverse=True), None)
