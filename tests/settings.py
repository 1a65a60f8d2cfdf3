"""Settings for the test suite.

The database is chosen by ``JOBQUEUE_TEST_DB`` (``sqlite``, the default, or
``postgres``); Redis by ``JOBQUEUE_TEST_REDIS_URL``; the Celery bridge's brokers by
``JOBQUEUE_TEST_AMQP_URL`` (RabbitMQ) and ``JOBQUEUE_TEST_REDIS_BROKER_URL``. All must
be reachable: the suite talks to real servers and never skips them.
"""

import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "jobqueue",
    "jobqueue.contrib.celery",
    "tests.testapp",
    "tests.tasks_app",
    "tests.celery_tasks",
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

STATIC_URL = "/static/"

_db = os.environ.get("JOBQUEUE_TEST_DB", "sqlite")
if _db == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("JOBQUEUE_TEST_PG_NAME", "postgres"),
            "USER": os.environ.get("JOBQUEUE_TEST_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("JOBQUEUE_TEST_PG_PASSWORD", ""),
            "HOST": os.environ.get("JOBQUEUE_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("JOBQUEUE_TEST_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("JOBQUEUE_TEST_PG_TEST_NAME", "test_jobqueue")},
        }
    }
elif _db == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("JOBQUEUE_TEST_SQLITE_NAME", "/tmp/jobqueue-tests.sqlite3"),
            # A file, not :memory:, so worker subprocesses see the same data.
            "TEST": {"NAME": os.environ.get("JOBQUEUE_TEST_SQLITE_NAME", "/tmp/jobqueue-tests.sqlite3")},
            "OPTIONS": {"timeout": 30},
        }
    }
else:
    raise RuntimeError(f"JOBQUEUE_TEST_DB must be 'sqlite' or 'postgres', not {_db!r}")

REDIS_URL = os.environ.get("JOBQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# The Celery bridge's tests send real Celery messages through both of its brokers: a real
# RabbitMQ, and a Redis database of their own (flushed by those tests, never jobqueue's).
AMQP_BROKER_URL = os.environ.get("JOBQUEUE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_BROKER_URL = os.environ.get("JOBQUEUE_TEST_REDIS_BROKER_URL", "redis://127.0.0.1:6379/11")

#: ``redis+cluster://127.0.0.1:7000`` runs the suite on a Redis Cluster (scripts/redis-cluster.sh,
#: started by tests/conftest.py if it is not running): jobqueue then gets it through REDIS_URL,
#: since django-redis's cache client does not speak the cluster protocol.
REDIS_CLUSTER = REDIS_URL.startswith(("redis+cluster://", "rediss+cluster://"))

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    } if not REDIS_CLUSTER else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

JOBQUEUE = {
    "CACHE_ALIAS": "default",
    **({"REDIS_URL": REDIS_URL} if REDIS_CLUSTER else {}),
    "PREFIX": os.environ.get("JOBQUEUE_TEST_PREFIX", "jqtest"),
    "LEASE_SECONDS": float(os.environ.get("JOBQUEUE_TEST_LEASE_SECONDS", 10)),
}
# Worker subprocesses in the tests run with short leases, heartbeats and slot TTLs, and
# reconcile Redis with the database more often.
for _name in ("HEARTBEAT_SECONDS", "LOCK_TTL_SECONDS", "RECONCILE_SECONDS"):
    if os.environ.get(f"JOBQUEUE_TEST_{_name}"):
        JOBQUEUE[_name] = float(os.environ[f"JOBQUEUE_TEST_{_name}"])

# django.tasks (Django >= 6.0, or the django-tasks backport on 5.2) runs on jobqueue.
TASKS = {
    "default": {
        "BACKEND": "jobqueue.contrib.tasks.JobQueueBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"TOPIC_PREFIX": "tasks.", "RETRY_BACKOFF": 0.05},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"jobqueue": {"handlers": ["console"], "level": "WARNING"}},
}
