"""Django settings of the fault-injection runner (``bench/faults.py``) and its workers.

The runner starts its own Redis and PostgreSQL and hands their addresses to every
process through the environment, so nothing here points at a shared server:

- ``JOBQUEUE_FAULTS_DB``: ``postgres`` (default) or ``sqlite``;
- ``JOBQUEUE_FAULTS_PG_HOST`` / ``_PG_PORT`` / ``_PG_NAME`` / ``_PG_USER``;
- ``JOBQUEUE_FAULTS_SQLITE_NAME``: the SQLite file when ``JOBQUEUE_FAULTS_DB=sqlite``;
- ``JOBQUEUE_FAULTS_REDIS_URL``: the runner's Redis;
- ``JOBQUEUE_FAULTS_PREFIX``: jobqueue's key prefix;
- ``JOBQUEUE_FAULTS_LEASE_SECONDS``, ``_HEARTBEAT_SECONDS``, ``_LOCK_TTL_SECONDS``: short
  timings, so a killed worker's jobs come back in seconds;
- ``JOBQUEUE_FAULTS_RECONCILE_SECONDS``: how often workers look for jobs whose push never
  reached Redis (jobqueue's default, 15, unless set);
- ``JOBQUEUE_FAULTS_AMQP_URL``: the RabbitMQ of the Celery bridge's scenario (the
  machine's, ``amqp://guest:guest@127.0.0.1:5672//``; its queue is the scenario's own);
- ``JOBQUEUE_FAULTS_LOG_DIR``: where the handlers of ``bench.faultapp`` record their runs.
"""

import os

SECRET_KEY = "fault-injection-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "jobqueue",
    "jobqueue.contrib.celery",
    "bench.faultapp",
]

_db = os.environ.get("JOBQUEUE_FAULTS_DB", "postgres")
if _db == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("JOBQUEUE_FAULTS_PG_NAME", "postgres"),
            "USER": os.environ.get("JOBQUEUE_FAULTS_PG_USER", "postgres"),
            "HOST": os.environ.get("JOBQUEUE_FAULTS_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("JOBQUEUE_FAULTS_PG_PORT", "5432"),
            # Fail fast while the server restarts; the worker retries with backoff.
            "OPTIONS": {"connect_timeout": 3},
        }
    }
elif _db == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("JOBQUEUE_FAULTS_SQLITE_NAME", "/tmp/jobqueue-faults.sqlite3"),
            # Writers take the lock when their transaction begins: with several worker processes a
            # deferred transaction that reads, then writes, would fail with "database is locked".
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
else:
    raise RuntimeError(f"JOBQUEUE_FAULTS_DB must be 'postgres' or 'sqlite', not {_db!r}")

REDIS_URL = os.environ.get("JOBQUEUE_FAULTS_REDIS_URL", "redis://127.0.0.1:6379/0")

#: ``redis+cluster://...`` (the ``redis-failover`` scenario's cluster) goes to jobqueue as
#: REDIS_URL: django-redis's cache client does not speak the cluster protocol.
REDIS_CLUSTER = REDIS_URL.startswith(("redis+cluster://", "rediss+cluster://"))

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    } if not REDIS_CLUSTER else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

JOBQUEUE = {
    "CACHE_ALIAS": "default",
    **({"REDIS_URL": REDIS_URL} if REDIS_CLUSTER else {}),
    "PREFIX": os.environ.get("JOBQUEUE_FAULTS_PREFIX", "jqfaults"),
    "LEASE_SECONDS": float(os.environ.get("JOBQUEUE_FAULTS_LEASE_SECONDS", 3)),
    "HEARTBEAT_SECONDS": float(os.environ.get("JOBQUEUE_FAULTS_HEARTBEAT_SECONDS", 0.5)),
    "LOCK_TTL_SECONDS": float(os.environ.get("JOBQUEUE_FAULTS_LOCK_TTL_SECONDS", 3)),
    "RECONCILE_SECONDS": float(os.environ.get("JOBQUEUE_FAULTS_RECONCILE_SECONDS", 15)),
}

FAULTS_LOG_DIR = os.environ.get("JOBQUEUE_FAULTS_LOG_DIR", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
