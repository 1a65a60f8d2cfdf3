"""``python manage.py createjob TOPIC DATA``: enqueue one job and print its id."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import DuplicateJob, InvalidJob, InvalidPayload
from ...models import Job
from ...validation import parse_json
from ._utils import aware_datetime, duration, job_id, one_line_errors, positive_int, priority

#: DATA that is JSON text, not a file name: an object, an array, a string, a literal, a number.
_JSON_TEXT = re.compile(r'\s*(?:[{\["]|(?:null|true|false|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*\Z)')


class Command(BaseCommand):
    help = "Enqueue a job. DATA is a JSON string, a path to a JSON file, or - for standard input."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return one_line_errors(super().create_parser(prog_name, subcommand, **kwargs))

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic")
        parser.add_argument("data", nargs="?", default="{}", help="JSON text, a path to a .json file, or -.")
        parser.add_argument("--priority", type=priority, help=str(Job._meta.get_field("priority").help_text))
        parser.add_argument("--entity-id", help="Dedupe key: one active job per entity and topic.")
        parser.add_argument("--parent-job-id", type=job_id, help="The job this one follows from.")
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--delay", type=duration, help="Run after this long (e.g. 30s, 5m, 2h).")
        when.add_argument("--run-after", type=aware_datetime, help="Run at or after this ISO 8601 time.")
        parser.add_argument("--depends-on", type=job_id, nargs="+", default=[], metavar="ID",
                            help="Jobs that must succeed first.")
        parser.add_argument("--max-attempts", type=positive_int)
        parser.add_argument("--timeout", type=positive_int, help="Seconds.")

    def read_data(self, data: str) -> Any:
        if _JSON_TEXT.match(data):
            return self.parse(data, "the DATA argument")
        if data != "-" and not os.path.isfile(data):
            raise CommandError(f"DATA is neither JSON nor an existing file: {data!r}")
        source = "standard input" if data == "-" else data
        try:
            text = sys.stdin.read() if data == "-" else Path(data).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
        except OSError as exc:
            raise CommandError(f"Cannot read {source}: {exc}") from None
        return self.parse(text, source)

    def parse(self, text: str, source: str) -> Any:
        try:
            return parse_json(text)
        except InvalidPayload as exc:
            raise CommandError(str(exc)) from None
        except ValueError as exc:
            raise CommandError(f"Invalid JSON in {source}: {exc}") from None

    def handle(self, *args: Any, **options: Any) -> None:
        payload = self.read_data(options["data"])
        try:
            job = Job.objects.enqueue(
                options["topic"],
                payload,
                priority=options["priority"],
                entity_id=options["entity_id"],
                parent=options["parent_job_id"],
                delay=options["delay"],
                run_after=options["run_after"],
                depends_on=options["depends_on"],
                max_attempts=options["max_attempts"],
                timeout=options["timeout"],
            )
        except (InvalidJob, DuplicateJob) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(str(job.pk))
