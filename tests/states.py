"""Test set-up: put a job's row in a given state directly, without a transition's effects."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from jobqueue.models import Job


def force(job: Job, sources: tuple[str, ...] | list[str], **values: Any) -> bool:
    """Write ``values`` to ``job``'s row if it is in one of ``sources`` (and onto ``job``).

    Redis, signals and follow-ups are not told: that is what tests of repairs need.
    """
    values.setdefault("updated_at", timezone.now())
    won = Job.objects.filter(pk=job.pk, status__in=list(sources)).update(**values)
    if won:
        for name, value in values.items():
            setattr(job, name, value)
    return bool(won)
