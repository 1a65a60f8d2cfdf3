"""``python manage.py jobworker``: process jobs."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...validation import validate_topic_name
from ...worker import Supervisor, Worker
from ._utils import one_line_errors, positive_int


class Command(BaseCommand):
    help = "Run a worker that processes jobs of the given topics (default: every registered topic)."
    requires_system_checks = []  # checks run below, once, with a clear error

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return one_line_errors(super().create_parser(prog_name, subcommand, **kwargs))

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="Topics to serve (default: all registered).")
        parser.add_argument("--burst", action="store_true", help="Exit once the topics have nothing queued.")
        parser.add_argument("--max-jobs", type=positive_int, help="Exit after processing this many jobs.")
        parser.add_argument("--processes", type=positive_int, default=1,
                            help="Run N worker processes under a supervisor that restarts any that dies.")
        parser.add_argument("--worker-id", help="This worker's id (default: host:pid:random).")
        parser.add_argument("--isolation", choices=["inline", "process"],
                            help="Override every topic's isolation: run in the worker, or in a forked child per job.")
        parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                            type=str.upper, help="Log level of the jobqueue loggers (default INFO).")

    def handle(self, *args: Any, **options: Any) -> None:
        self.check(tags=["jobqueue"])
        logger = logging.getLogger("jobqueue")
        logger.setLevel(options["log_level"])
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        topics = options["topics"]
        for topic in topics or []:
            try:
                validate_topic_name(topic)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        base_id = options["worker_id"]

        def make_worker(index: int | None = None) -> Worker:
            worker_id = base_id
            if base_id and index is not None:
                worker_id = f"{base_id}.{index}"
            return Worker(
                topics=topics,
                burst=options["burst"],
                max_jobs=options["max_jobs"],
                worker_id=worker_id,
                isolation=options["isolation"],
            )

        try:
            if options["processes"] > 1:
                code = Supervisor(options["processes"], make_worker).run()
            else:
                code = make_worker().run()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if code:
            raise CommandError(f"worker exited with {code}", returncode=code)
