"""Progress reports from a running handler, written at most every ``PROGRESS_THROTTLE_SECONDS``."""

from __future__ import annotations

import time
from typing import Any

from .conf import settings
from .constants import MAX_PROGRESS, MIN_PROGRESS, PROGRESS_MESSAGE_MAX_LENGTH, STAGE_MAX_LENGTH
from .storable import storable_text

_last_write: dict[Any, float] = {}
#: Jobs whose latest report was held back by the throttle (written by :func:`flush_progress`).
_unwritten: set[Any] = set()


def record_progress(job: Any, percent: float | None, message: str = "", stage: str = "") -> bool:
    """Set progress on ``job`` and write it unless the last write was too recent.

    The last report (100 %, or a new stage) is always written; one held back is
    written when the attempt ends (:func:`flush_progress`). Returns whether the
    row was written. Message and stage are cut to their columns' sizes and made
    storable (:mod:`jobqueue.storable`).
    """
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or percent != percent:
            raise ValueError(f"progress must be a number from {MIN_PROGRESS} to {MAX_PROGRESS}, not {percent!r}")
        job.progress = max(MIN_PROGRESS, min(MAX_PROGRESS, int(percent)))
    stage = storable_text(str(stage)[:STAGE_MAX_LENGTH]) if stage else ""
    stage_changed = bool(stage) and stage != job.stage
    job.progress_message = storable_text(str(message)[:PROGRESS_MESSAGE_MAX_LENGTH])
    if stage:
        job.stage = stage
    now = time.monotonic()
    last = _last_write.get(job.pk, 0.0)
    if not stage_changed and job.progress < MAX_PROGRESS and now - last < settings.PROGRESS_THROTTLE_SECONDS:
        _unwritten.add(job.pk)
        return False
    _last_write[job.pk] = now
    _write(job)
    if len(_last_write) > 10000:
        _last_write.clear()
    return True


def flush_progress(job: Any) -> bool:
    """Write ``job``'s latest report if the throttle held it back; returns whether it did."""
    if job.pk not in _unwritten:
        return False
    _write(job)
    return True


def _write(job: Any) -> None:
    _unwritten.discard(job.pk)
    type(job)._default_manager.filter(pk=job.pk).update(
        progress=job.progress, progress_message=job.progress_message, stage=job.stage
    )
