"""The guarded ``UPDATE`` every transition is made of.

A transition changes a row only if it is still in one of the states the transition
leaves (:data:`~.table.TRANSITIONS`), so two actors can never both win it: the
loser's ``UPDATE`` matches no row.

A transition that leaves a finished status (``requeue``) takes its jobs off the metrics
tally in the same transaction (:func:`jobqueue.tally.untally`), so the finished counts stay
the rows the table holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from ..models import FINISHED_STATUSES, Job
from ..tally import untally
from .table import TRANSITIONS, sources_of


def rows(name: str, *, pk: Any = None, ids: Iterable[Any] | None = None, attempts: int | None = None,
         only: tuple[str, ...] | None = None) -> QuerySet:
    """The rows transition ``name`` may change: one job (``pk``) or many (``ids``), in
    one of its source states (or of ``only``, some of them) and, with ``attempts``,
    still in that attempt (a worker whose job was reclaimed after a lost lease can
    never overwrite the new attempt)."""
    sources = sources_of(name)
    if only is not None:
        if not set(only) <= set(sources):
            raise ValueError(f"Transition {name!r} leaves {', '.join(sources)}, not {', '.join(only)}.")
        sources = only
    qs = Job._default_manager.filter(status__in=list(sources))
    qs = qs.filter(pk=pk) if ids is None else qs.filter(pk__in=list(ids))
    return qs if attempts is None else qs.filter(attempts=attempts)


def move(job: Job, name: str, to: str | None = None, *, attempt: int | None = None,
         only: tuple[str, ...] | None = None, **values: Any) -> bool:
    """Apply transition ``name`` to ``job`` (entering ``to``, or its one target) with
    ``values``; ``False`` if the row had left the transition's source states (or, with
    ``attempt``, had moved on to another attempt).

    On success the values are set on ``job`` too (expressions such as ``F()`` are not).
    """
    return update(job, name, status=_target(name, to), attempt=attempt, only=only, **values)


def update(job: Job, name: str, *, attempt: int | None = None, only: tuple[str, ...] | None = None,
           **values: Any) -> bool:
    """A guarded change that may keep the status (``set_priority``): like :func:`move`."""
    values.setdefault("updated_at", timezone.now())
    won = _apply(name, rows(name, pk=job.pk, attempts=attempt, only=only), values)
    if won:
        for field, value in values.items():
            if not hasattr(value, "resolve_expression"):
                setattr(job, field, value)
    return bool(won)


def move_many(name: str, ids: Iterable[Any], to: str | None = None, **values: Any) -> int:
    """Apply transition ``name`` to the jobs ``ids`` still in its source states; returns how many."""
    values.setdefault("updated_at", timezone.now())
    return _apply(name, rows(name, ids=ids), {"status": _target(name, to), **values})


def _apply(name: str, qs: QuerySet, values: dict[str, Any]) -> int:
    """``qs.update(**values)``, with the jobs it takes out of a finished status taken off
    the metrics tally first, in one transaction."""
    if name not in _LEAVES_FINISHED:
        return qs.update(**values)
    with transaction.atomic(using=router.db_for_write(Job)):
        untally(qs)
        return qs.update(**values)


#: The transitions that take a job out of a finished status, so off the tally (``requeue``).
_LEAVES_FINISHED = frozenset(name for name, t in TRANSITIONS.items() if set(t.sources) & set(FINISHED_STATUSES))


def _target(name: str, to: str | None) -> str:
    transition = TRANSITIONS[name]
    target = transition.target if to is None else to
    if target not in transition.targets:
        raise ValueError(f"Transition {name!r} enters {', '.join(transition.targets)}, not {target!r}.")
    return target
