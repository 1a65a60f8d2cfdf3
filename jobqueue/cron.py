"""A small five-field cron parser (minute hour day-of-month month day-of-week)."""

from __future__ import annotations

import datetime as dt

_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]


def _parse_field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"bad step {step_text!r}")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"bad range {part!r}")
            start, end = int(a), int(b)
        elif part.isdigit():
            start = end = int(part)
            if step != 1:
                end = high
        else:
            raise ValueError(f"bad value {part!r}")
        if high == 6 and end == 7:  # 7 is Sunday too
            end = 6 if start != 7 else 0
            start = min(start, end)
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class CronSchedule:
    """``CronSchedule("*/5 * * * *").next_after(now)`` gives the next matching minute."""

    def __init__(self, expression: str):
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"Cron expression {expression!r} must have 5 fields (minute hour day month weekday).")
        try:
            parsed = [_parse_field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES, strict=True)]
        except ValueError as exc:
            raise ValueError(f"Invalid cron expression {expression!r}: {exc}") from None
        self.expression = expression
        self.minutes, self.hours, self.days, self.months, self.weekdays = parsed
        self._any_day = fields[2] == "*"
        self._any_weekday = fields[4] == "*"

    def matches(self, when: dt.datetime) -> bool:
        if when.minute not in self.minutes or when.hour not in self.hours or when.month not in self.months:
            return False
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self._any_day or self._any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``when``."""
        candidate = when.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        for _ in range(366 * 24 * 60):
            if self.matches(candidate):
                return candidate
            candidate += dt.timedelta(minutes=1)
        raise ValueError(f"Cron expression {self.expression!r} never matches.")
