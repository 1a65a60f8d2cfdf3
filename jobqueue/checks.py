"""System checks for the ``JOBQUEUE`` setting (ids ``jobqueue.E001``...)."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import DEFAULTS
from .constants import SHELL_PERMISSION
from .states import Isolation

#: The most MAX_PAYLOAD_DEPTH may be: Python's json cannot read or write much deeper.
MAX_PAYLOAD_DEPTH_LIMIT = 500

_POSITIVE_NUMBERS = (
    "LEASE_SECONDS",
    "LOCK_TTL_SECONDS",
    "HEARTBEAT_SECONDS",
    "MAX_PAYLOAD_BYTES",
    "ENTITY_ID_MAX_LENGTH",
    "MAX_OUTPUT_BYTES",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "WORKER_STALE_SECONDS",
    "RECONCILE_SECONDS",
)

_BOOLEANS = (
    "WORKER_SYNCHRONOUS_COMMIT", "PREPARED_STATEMENTS", "SHELL_TOPIC", "ALLOW_UNREGISTERED_TOPICS", "OPENTELEMETRY",
)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    user = getattr(django_settings, "JOBQUEUE", {}) or {}
    if not isinstance(user, dict):
        return [Error("settings.JOBQUEUE must be a dict.", hint="JOBQUEUE = {'PREFIX': 'jq', ...}", id="jobqueue.E001")]
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown JOBQUEUE setting(s): {', '.join(unknown)}.",
                hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
                id="jobqueue.E002",
            )
        )
    url = user.get("REDIS_URL")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")):
            errors.append(
                Error(
                    f"JOBQUEUE['REDIS_URL'] = {url!r} is not a Redis URL.",
                    hint="Use redis://host:port/db, rediss://..., unix:///path/to/redis.sock "
                    "or redis+cluster://host:port for a Redis Cluster.",
                    id="jobqueue.E003",
                )
            )
    else:
        alias = user.get("CACHE_ALIAS", DEFAULTS["CACHE_ALIAS"])
        caches = getattr(django_settings, "CACHES", {})
        if not isinstance(alias, str) or alias not in caches:
            errors.append(
                Error(
                    f"JOBQUEUE['CACHE_ALIAS'] = {alias!r} is not in settings.CACHES.",
                    hint="Add a django_redis cache under that alias, or set JOBQUEUE['REDIS_URL'].",
                    id="jobqueue.E004",
                )
            )
        else:
            backend = caches[alias].get("BACKEND", "")
            if not (backend.startswith("django_redis.") or backend == "django.core.cache.backends.redis.RedisCache"):
                errors.append(
                    Error(
                        f"CACHES[{alias!r}] uses {backend}, which is not Redis.",
                        hint="Use django_redis.cache.RedisCache (or Django's RedisCache), "
                        "or set JOBQUEUE['REDIS_URL'].",
                        id="jobqueue.E005",
                    )
                )
    for name in _POSITIVE_NUMBERS:
        if name in user:
            value = user[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                errors.append(
                    Error(
                        f"JOBQUEUE[{name!r}] must be a positive number, not {value!r}.",
                        hint=f"The default is {DEFAULTS[name]}.",
                        id="jobqueue.E006",
                    )
                )
    for name in _BOOLEANS:
        if name in user and not isinstance(user[name], bool):
            errors.append(
                Error(
                    f"JOBQUEUE[{name!r}] must be True or False, not {user[name]!r}.",
                    hint=f"The default is {DEFAULTS[name]}.",
                    id="jobqueue.E009",
                )
            )
    depth = user.get("MAX_PAYLOAD_DEPTH", DEFAULTS["MAX_PAYLOAD_DEPTH"])
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_PAYLOAD_DEPTH_LIMIT:
        errors.append(
            Error(
                f"JOBQUEUE['MAX_PAYLOAD_DEPTH'] must be a whole number from 1 to {MAX_PAYLOAD_DEPTH_LIMIT}, "
                f"not {depth!r}.",
                hint=f"The default is {DEFAULTS['MAX_PAYLOAD_DEPTH']}; Python's json module cannot nest much deeper.",
                id="jobqueue.E010",
            )
        )
    prefetch = user.get("WORKER_PREFETCH", DEFAULTS["WORKER_PREFETCH"])
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
        errors.append(
            Error(
                f"JOBQUEUE['WORKER_PREFETCH'] must be a whole number of at least 1, not {prefetch!r}.",
                hint=f"The default is {DEFAULTS['WORKER_PREFETCH']}; 1 leases one job id per Redis call.",
                id="jobqueue.E011",
            )
        )
    spin = user.get("SPIN_WAIT_MICROSECONDS", DEFAULTS["SPIN_WAIT_MICROSECONDS"])
    if isinstance(spin, bool) or not isinstance(spin, (int, float)) or not 0 <= spin <= 1_000_000:
        errors.append(
            Error(
                f"JOBQUEUE['SPIN_WAIT_MICROSECONDS'] must be a number from 0 to 1000000, not {spin!r}.",
                hint=f"The default is {DEFAULTS['SPIN_WAIT_MICROSECONDS']}; 0 waits for PostgreSQL's answers asleep.",
                id="jobqueue.E012",
            )
        )
    prefix = user.get("PREFIX", DEFAULTS["PREFIX"])
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} "):
        errors.append(
            Error(
                f"JOBQUEUE['PREFIX'] = {prefix!r} must be a non-empty string without braces or spaces.",
                hint="For example 'jq' or 'myproject:jq'.",
                id="jobqueue.E007",
            )
        )
    if user.get("DEFAULT_ISOLATION", DEFAULTS["DEFAULT_ISOLATION"]) not in Isolation.values:
        errors.append(
            Error(
                f"JOBQUEUE['DEFAULT_ISOLATION'] must be {' or '.join(map(repr, Isolation.values))}.",
                hint="'process' forks a child per job.",
                id="jobqueue.E008",
            )
        )
    lease = user.get("LEASE_SECONDS", DEFAULTS["LEASE_SECONDS"])
    beat = user.get("HEARTBEAT_SECONDS", DEFAULTS["HEARTBEAT_SECONDS"])
    ttl = user.get("LOCK_TTL_SECONDS", DEFAULTS["LOCK_TTL_SECONDS"])
    # A value that is not a positive number already has its E006; don't pile a warning on it.
    values = (lease, beat, ttl)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
    if numbers and (beat * 2 > lease or beat * 2 > ttl):
        errors.append(
            Warning(
                "JOBQUEUE['HEARTBEAT_SECONDS'] should be at most half of LEASE_SECONDS and LOCK_TTL_SECONDS.",
                hint="Otherwise one late heartbeat lets a live worker's jobs and slots expire.",
                id="jobqueue.W001",
            )
        )
    if user.get("SHELL_TOPIC"):
        errors.append(
            Warning(
                f"JOBQUEUE['SHELL_TOPIC'] is on: users with the {SHELL_PERMISSION} permission can run commands.",
                hint="Turn it off unless you need it.",
                id="jobqueue.W002",
            )
        )
    return errors
