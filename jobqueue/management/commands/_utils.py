"""Argument types shared by jobqueue's commands (each gives a clear error for bad input),
and :func:`printable` for what they print of a job."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import uuid

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ...constants import MAX_PRIORITY, MIN_PRIORITY
from ...validation import parse_duration


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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


#: Control characters (C0, DEL, C1) other than tab and line feed: a terminal obeys them.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters other than tab and line feed written as ``\\x1b``, so
    that what a job stored cannot clear the screen or retitle the terminal it is shown in."""
    return _CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def one_line_errors(parser: CommandParser) -> CommandParser:
    """Make argument errors one line on the command line (argparse prints its usage
    block first); from ``call_command`` they stay a ``CommandError``."""

    def error(message: str) -> None:
        if not parser.called_from_command_line:
            raise CommandError(f"Error: {message}")
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]
    return parser
