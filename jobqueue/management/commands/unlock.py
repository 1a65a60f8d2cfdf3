"""``python manage.py unlock TOPIC``: free a topic's slots by force (after a worker crashed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import registry
from ...engine import TopicLock
from ...models import Topic
from ._utils import one_line_errors


class Command(BaseCommand):
    help = "Free the slots of topics by force, e.g. those a crashed worker held."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return one_line_errors(super().create_parser(prog_name, subcommand, **kwargs))

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topics", nargs="*", metavar="TOPIC")
        parser.add_argument("--all", action="store_true", help="Every topic.")
        parser.add_argument("--dry-run", action="store_true", help="Only show who holds the slots.")

    def handle(self, *args: Any, **options: Any) -> None:
        known = set(Topic.objects.values_list("name", flat=True)) | set(registry.topics())
        if options["all"]:
            if options["topics"]:
                raise CommandError("Give topics or --all, not both.")
            topics = sorted(known)
        elif options["topics"]:
            unknown = [t for t in options["topics"] if t not in known]
            if unknown:
                raise CommandError(f"Unknown topic(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
            topics = options["topics"]
        else:
            raise CommandError("Name the topics to unlock, or use --all.")
        for topic in topics:
            holders = TopicLock.holders(topic) if options["dry_run"] else TopicLock.force_release(topic)
            verb = "held by" if options["dry_run"] else "released"
            if not holders:
                self.stdout.write(f"{topic}: no holders")
            for h in holders:
                since = h.info.get("since")
                when = dt.datetime.fromtimestamp(since, dt.timezone.utc).isoformat(timespec="seconds") if since else "?"
                self.stdout.write(f"{topic}: {verb} {h.worker_id} (host {h.info.get('host', '?')}, "
                                  f"pid {h.info.get('pid', '?')}, since {when})")
