"""``manage.py jobbridge celery``: turn a Celery broker's task messages into jobs."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from django.conf import settings as django_settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobqueue.arguments import positive_int, positive_seconds
from jobqueue.conf import settings
from jobqueue.exceptions import InvalidJob
from jobqueue.models import Topic


def _mapping(value: str) -> tuple[str, str]:
    task, sep, topic = value.partition("=")
    if not sep or not task or not topic:
        raise argparse.ArgumentTypeError(f"{value!r} is not TASK=TOPIC")
    return task, topic


class Command(BaseCommand):
    help = (
        "Consume Celery task messages (protocol 2, JSON) from a RabbitMQ or Redis broker and turn each "
        "into a job of the topic its task maps to (JOBQUEUE['CELERY_TASKS'] and --map). A message is "
        "acknowledged once its job is committed; refused messages are rejected without requeueing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", choices=["celery"], help="What to bridge: celery.")
        parser.add_argument("--broker", help="The broker's URL, amqp://... or redis://... "
                            "(default: settings.CELERY_BROKER_URL).")
        parser.add_argument("--queue", action="append", dest="queues", metavar="NAME",
                            help="A queue to consume (repeat for several; default: celery).")
        parser.add_argument("--map", action="append", dest="mappings", type=_mapping, default=[],
                            metavar="TASK=TOPIC", help="Map a task name to a topic (over CELERY_TASKS).")
        parser.add_argument("--batch", type=positive_int, help="Messages written per transaction, at most "
                            "(default 500).")
        parser.add_argument("--batch-seconds", type=positive_seconds, help="How long a partial batch waits for its "
                            "next message (default 0.05); it is written at the latest when ten times that old.")
        parser.add_argument("--prefetch", type=positive_int, help="Unacknowledged messages the broker may "
                            "send ahead (default: twice the batch).")
        parser.add_argument("--max-priority", type=positive_int, help="x-max-priority of the queues, when "
                            "Celery declares them with task_queue_max_priority (RabbitMQ).")
        parser.add_argument("--no-declare", action="store_true", help="Consume the queues as they are, "
                            "without declaring them (e.g. declared with a dead-letter exchange).")
        parser.add_argument("--visibility-timeout", type=positive_seconds, help="Redis broker: seconds before a "
                            "message taken but not acknowledged is delivered again (kombu's default: 3600).")
        parser.add_argument("--burst", action="store_true", help="Exit once the queues stay empty for a second.")

    def handle(self, *args: Any, **options: Any) -> None:
        from ...bridge import BridgeOptions, CeleryBridge  # kombu: listing commands must not need it

        url = options["broker"] or getattr(django_settings, "CELERY_BROKER_URL", None)
        if not url:
            raise CommandError("Give the broker's URL with --broker (or set CELERY_BROKER_URL).")
        tasks = dict(settings.CELERY_TASKS or {})
        tasks.update(options["mappings"])
        if not tasks:
            raise CommandError("No task is mapped to a topic: set JOBQUEUE['CELERY_TASKS'] or give --map.")
        for task, topic in tasks.items():
            try:
                Topic.objects.resolve(topic)
            except InvalidJob as exc:
                raise CommandError(f"Task {task!r} maps to topic {topic!r}: {exc}") from None
        defaults = BridgeOptions()
        bridge = CeleryBridge(url, options["queues"] or ["celery"], tasks, BridgeOptions(
            batch_size=options["batch"] or defaults.batch_size,
            batch_seconds=options["batch_seconds"] or defaults.batch_seconds,
            prefetch=options["prefetch"],
            declare=not options["no_declare"],
            max_priority=options["max_priority"],
            visibility_timeout=options["visibility_timeout"],
            burst=options["burst"],
        ))
        self._install_signals(bridge)
        queues = ", ".join(bridge.queue_names)
        self.stdout.write(f"Bridging Celery queue(s) {queues} into {len(set(tasks.values()))} topic(s).")
        self.stdout.flush()
        tally = bridge.run()
        self.stdout.write(f"Bridge stopped: {tally.summary()}.")

    def _install_signals(self, bridge: Any) -> None:
        """First SIGTERM/SIGINT: write and acknowledge the batch in hand, then exit. Second: exit
        now (unacknowledged messages go back to the broker)."""
        signals = {"count": 0}

        def on_signal(signum: int, frame: Any) -> None:
            signals["count"] += 1
            if signals["count"] > 1:
                sys.exit(128 + signum)
            bridge.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
