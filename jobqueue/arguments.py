"""Command-line argument types (for ``argparse``'s ``type=``), shared by jobqueue's
commands and the Celery bridge's: each turns bad input into a one-line error that says
what was expected."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .constants import MAX_PRIORITY, MIN_PRIORITY
from .validation import parse_duration


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def priority(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"{value} is out of range ({MIN_PRIORITY}..{MAX_PRIORITY})")
    return value


def duration(text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def aware_datetime(text: str) -> dt.datetime:
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time (e.g. 2030-01-31T12:00:00+00:00)")
    if timezone.is_naive(value):
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; add one, e.g. +00:00 or Z")
    return value


def job_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a UUID)") from None
