"""Signals sent as jobs move through their life (``sender`` is the :class:`~jobqueue.models.Job` class).

Every signal passes ``job``; ``job_succeeded`` also passes ``result``,
``job_failed`` passes ``error`` and ``will_retry``.
"""

from __future__ import annotations

from django.dispatch import Signal

job_enqueued = Signal()
job_started = Signal()
job_succeeded = Signal()
job_failed = Signal()
job_finished = Signal()
