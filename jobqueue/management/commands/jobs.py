"""``python manage.py jobs ...``: inspect and repair jobs from a terminal."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ... import engine, registry
from ...chaining import storable_result
from ...exceptions import DuplicateJob, InvalidTransition
from ...models import FINISHED_STATUSES, Job, JobStatus, Topic
from ...resync import job_counts, resync
from ...worker.runner import run_inline
from ._utils import duration, job_id, one_line_errors, positive_int, printable


def _fmt_time(value: Any) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


class Command(BaseCommand):
    help = "List, inspect, requeue, cancel, remove, purge and rerun jobs; show stats; resync Redis."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return one_line_errors(super().create_parser(prog_name, subcommand, **kwargs))

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        add_parser = sub.add_parser
        sub.add_parser = lambda *a, **kw: one_line_errors(add_parser(*a, **kw))  # type: ignore[method-assign]
        p = sub.add_parser("list", help="List jobs, newest first.")
        p.add_argument("--status", choices=JobStatus.values)
        p.add_argument("--topic")
        p.add_argument("-n", type=positive_int, default=20, help="How many (default 20).")
        p.add_argument("--json", action="store_true", help="JSON lines for scripts.")
        p = sub.add_parser("info", help="One job with its executions.")
        p.add_argument("id", type=job_id)
        p.add_argument("--json", action="store_true")
        for name, text in (("requeue", "Requeue failed or cancelled jobs."), ("cancel", "Cancel jobs."),
                           ("rm", "Delete finished jobs."), ("rerun", "Run a job again in the foreground.")):
            p = sub.add_parser(name, help=text)
            p.add_argument("ids", type=job_id, nargs="+" if name != "rerun" else 1, metavar="ID")
        p = sub.add_parser("purge", help="Delete finished jobs older than a duration.")
        p.add_argument("--older-than", type=duration, required=True, help="e.g. 7d, 12h.")
        p.add_argument("--status", choices=["succeeded", "failed", "cancelled"], action="append")
        p.add_argument("--dry-run", action="store_true")
        p = sub.add_parser("stats", help="Counts per topic and status.")
        p.add_argument("--json", action="store_true")
        p = sub.add_parser("resync", help="Rebuild Redis from the database.")
        p.add_argument("topics", nargs="*", metavar="TOPIC")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"do_{options['action']}")(options)

    def _get(self, pk: Any) -> Any:
        try:
            return Job.objects.select_related("topic").get(pk=pk)
        except Job.DoesNotExist:
            raise CommandError(f"No job with id {pk}.") from None

    def do_list(self, options: dict[str, Any]) -> None:
        qs = Job.objects.order_by("-created_at")
        if options["status"]:
            qs = qs.filter(status=options["status"])
        if options["topic"]:
            qs = qs.filter(topic_id=options["topic"])
        jobs = list(qs[: options["n"]])
        if options["json"]:
            for job in jobs:
                self.stdout.write(json.dumps(_job_dict(job), default=str))
            return
        rows = [[str(j.pk), j.topic_id, j.status, str(j.priority), f"{j.progress}%", f"{j.attempts}/{j.max_attempts}",
                 _fmt_time(j.created_at), (j.entity_id or "")[:30]] for j in jobs]
        self.stdout.write(_table(rows, ["ID", "TOPIC", "STATUS", "PRIO", "PROGRESS", "TRIES", "CREATED", "ENTITY"]))

    def do_info(self, options: dict[str, Any]) -> None:
        job = self._get(options["id"])
        data = _job_dict(job)
        executions = list(job.executions.order_by("attempt"))
        if options["json"]:
            data["executions"] = [
                {f: getattr(e, f) for f in ("attempt", "worker_id", "hostname", "pid", "started_at", "finished_at",
                                            "outcome", "exit_code", "duration", "error", "stdout", "stderr")}
                for e in executions
            ]
            self.stdout.write(json.dumps(data, default=str, indent=2))
            return

        def write(text: str) -> None:
            self.stdout.write(printable(text))

        for key, value in data.items():
            if key in ("payload", "result"):
                value = json.dumps(value, indent=2, ensure_ascii=False)
            write(f"{key:>16}: {value}")
        if job.status == "queued":
            write(f"{'position':>16}: {job.position_in_queue}")
        for e in executions:
            write(f"\n--- attempt {e.attempt}: {e.outcome} on {e.worker_id} (pid {e.pid}), "
                  f"{_fmt_time(e.started_at)}, {e.duration or 0:.3f}s, exit {e.exit_code}")
            if e.error:
                write(f"error: {e.error}")
            for name in ("stdout", "stderr"):
                text = getattr(e, name)
                if text:
                    tail = "\n".join(text.rstrip().splitlines()[-20:])
                    write(f"{name} (last lines):\n{tail}")
            if e.traceback:
                write(e.traceback.rstrip())

    def _each(self, ids: list[Any], action: Any, verb: str) -> None:
        failures = 0
        for pk in ids:
            job = self._get(pk)
            try:
                action(job)
            except (InvalidTransition, DuplicateJob) as exc:
                self.stderr.write(str(exc))
                failures += 1
                continue
            self.stdout.write(f"{verb} {pk}")  # not job.pk: delete() clears it
        if failures:
            raise CommandError(f"{failures} of {len(ids)} job(s) could not be {verb}.")

    def do_requeue(self, options: dict[str, Any]) -> None:
        self._each(options["ids"], lambda job: job.requeue(), "requeued")

    def do_cancel(self, options: dict[str, Any]) -> None:
        self._each(options["ids"], lambda job: job.cancel("cancelled from the command line"), "cancelled")

    def do_rm(self, options: dict[str, Any]) -> None:
        def remove(job: Any) -> None:
            if not job.is_finished:
                raise InvalidTransition(f"Job {job.pk} is {job.status}; only finished jobs can be removed.")
            job.delete()

        self._each(options["ids"], remove, "removed")

    def do_purge(self, options: dict[str, Any]) -> None:
        try:
            cutoff = timezone.now() - options["older_than"]
        except OverflowError:
            raise CommandError(f"--older-than {options['older_than'].days} days is too long: "
                               "it reaches back before the year 1.") from None
        statuses = options["status"] or list(FINISHED_STATUSES)
        qs = Job.objects.filter(status__in=statuses, finished_at__lt=cutoff)
        if options["dry_run"]:
            self.stdout.write(f"would delete {qs.count()} job(s) finished before {_fmt_time(cutoff)}")
            return
        deleted = 0
        while True:
            ids = list(qs.values_list("pk", flat=True)[:1000])
            if not ids:
                break
            deleted += Job.objects.filter(pk__in=ids).delete()[1].get("jobqueue.Job", 0)
        self.stdout.write(f"deleted {deleted} job(s) finished before {_fmt_time(cutoff)}")

    def do_stats(self, options: dict[str, Any]) -> None:
        counts = job_counts(Topic.objects.values_list("name", flat=True))
        workers = engine.safe_call(engine.live_workers) or []
        if options["json"]:
            self.stdout.write(json.dumps({"topics": counts, "workers": workers}, default=str, indent=2))
            return
        rows = [[t, *(str(c[s]) for s in JobStatus.values)] for t, c in sorted(counts.items())]
        self.stdout.write(_table(rows, ["TOPIC", *(s.upper() for s in JobStatus.values)]))
        self.stdout.write(f"\n{len([w for w in workers if not w['stale']])} live worker(s)")
        for w in workers:
            flag = " (stale)" if w["stale"] else ""
            self.stdout.write(f"  {w['id']}: topics {', '.join(w.get('topics', []))}, "
                              f"{w.get('processed', 0)} jobs, last beat {w['age']:.0f}s ago{flag}")

    def do_resync(self, options: dict[str, Any]) -> None:
        topics = options["topics"] or None
        if topics:
            known = set(Topic.objects.values_list("name", flat=True))
            unknown = [t for t in topics if t not in known]
            if unknown:
                raise CommandError(f"Unknown topic(s): {', '.join(unknown)}.")
        report = resync(topics)
        self.stdout.write(
            f"pushed {sum(report.pushed.values())}, scheduled {sum(report.scheduled.values())}, "
            f"dropped {sum(report.dropped.values())} stale, re-leased {sum(report.leases.values())} running"
        )

    def do_rerun(self, options: dict[str, Any]) -> None:
        """Run the handler in this process for debugging; the job's state is not changed."""
        job = self._get(options["ids"][0])
        spec = registry.get(job.topic_id)
        if spec is None:
            raise CommandError(f"No handler is registered for topic {job.topic_id!r}.")
        outcome = run_inline(spec.func, job, job.timeout)
        if outcome.ok:
            self.stdout.write(json.dumps(storable_result(outcome.result), indent=2, default=str))
        else:
            self.stderr.write(printable(outcome.traceback or outcome.error))
            raise CommandError(printable(f"Job {job.pk} failed when rerun: {outcome.error}"))


def _job_dict(job: Any) -> dict[str, Any]:
    return {
        "id": str(job.pk),
        "topic": job.topic_id,
        "status": job.status,
        "priority": job.priority,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "stage": job.stage,
        "entity_id": job.entity_id,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "parent": str(job.parent_id) if job.parent_id else None,
        "worker": job.worker_id,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "run_after": job.run_after,
        "error": job.error,
        "payload": job.payload,
        "result": job.result,
    }
