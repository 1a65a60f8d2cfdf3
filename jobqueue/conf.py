"""jobqueue's settings: one ``JOBQUEUE = {...}`` dict.

Nothing is read at import time. The dict is read on first use and kept, and read again
whenever Django says it changed (its ``setting_changed`` signal: ``override_settings``,
pytest-django's ``settings`` fixture), so ``override_settings(JOBQUEUE=...)`` works in
tests. Every key is optional; :data:`DEFAULTS` names them with their units.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from .constants import ENTITY_ID_COLUMN_LENGTH

#: Seconds a popped job stays leased without a heartbeat before it is reclaimed.
LEASE_SECONDS = 60
#: Seconds a topic slot is held without renewal before it frees itself.
LOCK_TTL_SECONDS = 30
#: Seconds between two heartbeats of a worker (renews slots and leases).
HEARTBEAT_SECONDS = 5
#: Largest accepted payload, in bytes of its JSON encoding.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Deepest accepted nesting of objects and arrays in a payload, in levels (``{"a": []}`` is 2).
MAX_PAYLOAD_DEPTH = 100
#: Longest accepted entity id, in characters (at most the column's size).
ENTITY_ID_MAX_LENGTH = ENTITY_ID_COLUMN_LENGTH
#: Job ids a worker leases ahead per Redis call at most, and on PostgreSQL claims and records per
#: statement (see ``jobqueue/worker/readahead.py``).
WORKER_PREFETCH = 8
#: Bytes of stdout and of stderr kept per execution.
MAX_OUTPUT_BYTES = 64 * 1024
#: Seconds between two checks (by one worker per topic) for queued jobs missing from Redis.
RECONCILE_SECONDS = 15
#: A topic's attempts per job, unless its handler or an operator says otherwise (also the
#: default of the Topic and Job columns).
DEFAULT_MAX_ATTEMPTS = 3
#: A topic's timeout per attempt, in seconds (likewise).
DEFAULT_TIMEOUT = 300
#: A topic's base of the exponential retry delay, in seconds (likewise).
DEFAULT_RETRY_BACKOFF = 2.0
#: Where a topic's jobs run: "inline" in the worker, or "process" in a forked child (likewise).
DEFAULT_ISOLATION = "inline"

DEFAULTS: dict[str, Any] = {
    # Redis: a django-redis (or Django's RedisCache) CACHES alias, unless REDIS_URL is set.
    "CACHE_ALIAS": "default",
    "REDIS_URL": None,
    "PREFIX": "jq",
    "LEASE_SECONDS": LEASE_SECONDS,
    "LOCK_TTL_SECONDS": LOCK_TTL_SECONDS,
    "HEARTBEAT_SECONDS": HEARTBEAT_SECONDS,
    "MAX_PAYLOAD_BYTES": MAX_PAYLOAD_BYTES,
    "MAX_PAYLOAD_DEPTH": MAX_PAYLOAD_DEPTH,
    "ENTITY_ID_MAX_LENGTH": ENTITY_ID_MAX_LENGTH,
    "MAX_OUTPUT_BYTES": MAX_OUTPUT_BYTES,
    # Topic defaults, used when a handler or Topic row says nothing.
    "DEFAULT_MAX_ATTEMPTS": DEFAULT_MAX_ATTEMPTS,
    "DEFAULT_TIMEOUT": DEFAULT_TIMEOUT,
    "DEFAULT_RETRY_BACKOFF": DEFAULT_RETRY_BACKOFF,
    "MAX_RETRY_DELAY": 3600,
    "DEFAULT_ISOLATION": DEFAULT_ISOLATION,
    # Per-topic options over a handler's: {"topic": {"rate": "100/m", "key_concurrency": 2}}.
    # Any field a handler may set; an operator's change in the admin still wins.
    "TOPIC_OPTIONS": {},
    # Worker.
    "WORKER_STALE_SECONDS": 30,
    # Job ids a worker holding one slot of a topic leases per Redis call at most (fewer
    # as its jobs take longer: see jobqueue/worker/readahead.py); 1 leases one at a time.
    "WORKER_PREFETCH": WORKER_PREFETCH,
    "PROGRESS_THROTTLE_SECONDS": 0.5,
    # A job whose push to Redis never happened (Redis unreachable, or the enqueuer died
    # after its commit) is found and pushed within about this many seconds.
    "RECONCILE_SECONDS": RECONCILE_SECONDS,
    # On PostgreSQL the worker's commits skip the WAL flush wait (at-least-once holds: see README).
    "WORKER_SYNCHRONOUS_COMMIT": False,
    # On PostgreSQL (psycopg 3), prepare the hot statements on the server; turn off behind
    # a pooler that cannot keep prepared statements (PgBouncer transaction mode before 1.21).
    "PREPARED_STATEMENTS": True,
    # On PostgreSQL (psycopg 3), wait for an enqueue's INSERT polling the socket for up to
    # this long before sleeping on it (see jobqueue/transitions/spinwait.py); 0: never.
    "SPIN_WAIT_MICROSECONDS": 1000,
    # Optional features.
    "DATA_DIR": None,
    "TOPICS_DIR": None,
    "SCRIPT_INTERPRETER": None,
    "SHELL_TOPIC": False,
    # Enqueue unknown topics (no handler, no Topic row) instead of refusing them.
    "ALLOW_UNREGISTERED_TOPICS": False,
    # jobqueue.contrib.celery: Celery task names and the topics their messages become jobs of.
    "CELERY_TASKS": {},
    # Trace jobs with OpenTelemetry when opentelemetry-api is installed (the otel extra).
    "OPENTELEMETRY": True,
    # The broker that jobqueue.contrib.celery publishes to (else Django's CELERY_BROKER_URL).
    "CELERY_BROKER_URL": None,
}


class Settings:
    """Attribute access to ``settings.JOBQUEUE`` merged over :data:`DEFAULTS`.

    The merged values are kept once read (every enqueue and every job reads several:
    reading Django's settings each time was a measurable part of an enqueue), as
    attributes of this object, so a read is a plain attribute lookup (not a call of
    ``__getattr__``, which only the first read after a change makes), and dropped when
    ``setting_changed`` names ``JOBQUEUE``.
    """

    def user_settings(self) -> dict[str, Any]:
        value = getattr(django_settings, "JOBQUEUE", None) or {}
        if not isinstance(value, dict):
            raise TypeError("settings.JOBQUEUE must be a dict")
        return value

    def __getattr__(self, name: str) -> Any:
        # Reached only by a name not kept: the first read since a change, or an unknown one.
        merged = {**DEFAULTS, **{k: v for k, v in self.user_settings().items() if k in DEFAULTS}}
        self.__dict__.update(merged)
        try:
            return merged[name]
        except KeyError:
            raise AttributeError(f"Unknown jobqueue setting: {name}") from None

    def reload(self, *, setting: str = "JOBQUEUE", **_: Any) -> None:
        """Read ``settings.JOBQUEUE`` again on the next access (a ``setting_changed`` receiver)."""
        if setting == "JOBQUEUE":
            for name in DEFAULTS:
                self.__dict__.pop(name, None)


settings = Settings()
setting_changed.connect(settings.reload, dispatch_uid="jobqueue.conf.reload")
