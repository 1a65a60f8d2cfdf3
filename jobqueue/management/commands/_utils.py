"""What jobqueue's commands share besides their argument types (:mod:`jobqueue.arguments`,
re-exported here): :func:`printable` for what they print of a job, and
:func:`one_line_errors`."""

from __future__ import annotations

import re

from django.core.management.base import CommandError, CommandParser

from ...arguments import aware_datetime, duration, job_id, positive_int, positive_seconds, priority

__all__ = ["aware_datetime", "duration", "job_id", "one_line_errors", "positive_int", "positive_seconds",
           "printable", "priority"]


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
