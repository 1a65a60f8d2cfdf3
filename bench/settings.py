"""Django settings shared by every system the benchmark runs: jobqueue, Celery and RQ.

The database is PostgreSQL (``JOBQUEUE_BENCH_DB=postgres``, the default) or SQLite
(``sqlite``, used by the smoke test when the suite runs on SQLite). Every server is
named by an environment variable so a run never touches another project's data:

- ``JOBQUEUE_BENCH_PG_NAME`` (``jobqueue_bench``), ``..._PG_HOST``, ``..._PG_PORT``,
  ``..._PG_USER``, ``..._PG_PASSWORD``, ``JOBQUEUE_BENCH_CONN_MAX_AGE`` (``0``);
  ``JOBQUEUE_BENCH_SQLITE_NAME``;
- ``JOBQUEUE_BENCH_REDIS_URL`` (``redis://127.0.0.1:6379/13``): one Redis database,
  flushed between workloads, holding jobqueue's keys, Celery's broker and RQ's queues;
- ``JOBQUEUE_BENCH_PREFIX`` (``jqbench``): jobqueue's key prefix;
- ``JOBQUEUE_BENCH_WORKER_PREFETCH``: the worker's ``WORKER_PREFETCH``, if set;
- ``JOBQUEUE_BENCH_SPIN_WAIT_MICROSECONDS``: jobqueue's ``SPIN_WAIT_MICROSECONDS``, if set;
- ``JOBQUEUE_BENCH_AMQP_URL`` (``amqp://guest:guest@127.0.0.1:5672//``): the RabbitMQ of the
  Celery bridge's workload.
"""

import os

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "bench.urls"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "jobqueue",
    "jobqueue.contrib.celery",
    "bench.benchapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Django's default (0: a connection per request) unless JOBQUEUE_BENCH_CONN_MAX_AGE says
# otherwise ("none" keeps connections open for good).
_conn_max_age_env = os.environ.get("JOBQUEUE_BENCH_CONN_MAX_AGE", "0")
_conn_max_age = None if _conn_max_age_env.lower() == "none" else int(_conn_max_age_env)

_db = os.environ.get("JOBQUEUE_BENCH_DB", "postgres")
if _db == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("JOBQUEUE_BENCH_PG_NAME", "jobqueue_bench"),
            "USER": os.environ.get("JOBQUEUE_BENCH_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("JOBQUEUE_BENCH_PG_PASSWORD", ""),
            "HOST": os.environ.get("JOBQUEUE_BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("JOBQUEUE_BENCH_PG_PORT", "5432"),
            "CONN_MAX_AGE": _conn_max_age,
        }
    }
elif _db == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("JOBQUEUE_BENCH_SQLITE_NAME", "/tmp/jobqueue-bench.sqlite3"),
            "OPTIONS": {"timeout": 30},
        }
    }
else:
    raise RuntimeError(f"JOBQUEUE_BENCH_DB must be 'postgres' or 'sqlite', not {_db!r}")

REDIS_URL = os.environ.get("JOBQUEUE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}

JOBQUEUE = {
    "CACHE_ALIAS": "default",
    "PREFIX": os.environ.get("JOBQUEUE_BENCH_PREFIX", "jqbench"),
    # JOBQUEUE_BENCH_WORKER_PREFETCH=1 measures a worker that leases one job id per Redis call.
    **(
        {"WORKER_PREFETCH": int(os.environ["JOBQUEUE_BENCH_WORKER_PREFETCH"])}
        if os.environ.get("JOBQUEUE_BENCH_WORKER_PREFETCH")
        else {}
    ),
    # JOBQUEUE_BENCH_SPIN_WAIT_MICROSECONDS=0 measures statements waited for asleep.
    **(
        {"SPIN_WAIT_MICROSECONDS": int(os.environ["JOBQUEUE_BENCH_SPIN_WAIT_MICROSECONDS"])}
        if os.environ.get("JOBQUEUE_BENCH_SPIN_WAIT_MICROSECONDS")
        else {}
    ),
}

# Celery as a Django project configures it: Redis broker, results ignored (nothing here reads them).
# The bridge's workload points the Celery worker at RabbitMQ too (bench/bridging.py).
CELERY_BROKER_URL = os.environ.get("JOBQUEUE_BENCH_CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "WARNING"}},
}

# The durable peers, when installed (requirements/bench.txt): django-tasks' database backend
# on any database, procrastinate on PostgreSQL only (bench/durable_peers.py).
from importlib.util import find_spec  # noqa: E402

# On Django < 6 the backend runs on the django-tasks package (Django 6 has django.tasks).
_tasks_api = "django.tasks" if find_spec("django.tasks") else "django_tasks" if find_spec("django_tasks") else None
if find_spec("django_tasks_db") and _tasks_api:
    if _tasks_api == "django_tasks":
        INSTALLED_APPS.append("django_tasks")
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"db": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["bench"]}}

if _db == "postgres":
    if find_spec("procrastinate"):
        INSTALLED_APPS.append("procrastinate.contrib.django")
        PROCRASTINATE_IMPORT_PATHS = ["bench.durable_peers"]
