"""Settings of the demo project (``make demo``): SQLite, a local Redis, DEBUG on.

Two environment variables matter:

- ``REDIS_URL``: the Redis jobqueue uses (``scripts/run_demo.py`` starts an
  embedded one and sets this to its ``unix://`` socket when it is not set);
- ``DEMO_DB_PATH``: the SQLite file (default ``demo_project/var/db.sqlite3``).

Not for production: the secret key is public and DEBUG is on.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
VAR_DIR = BASE_DIR / "var"

SECRET_KEY = "demo-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "jobqueue",
    "demo_project.pipeline",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo_project.urls"
WSGI_APPLICATION = "demo_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB_PATH") or str(VAR_DIR / "db.sqlite3"),
        "OPTIONS": {
            # The web server and the worker write to the same file: WAL lets pages read
            # while the worker writes, IMMEDIATE transactions wait for the lock instead of
            # failing, and the timeout says how long.
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        "KEY_PREFIX": "demo",
    }
}

JOBQUEUE = {
    "REDIS_URL": REDIS_URL,
    "PREFIX": "jqdemo",
    # Write progress often, so the page's bars move smoothly.
    "PROGRESS_THROTTLE_SECONDS": 0.2,
}

# django.tasks (Django >= 6.0, or the django-tasks backport) runs @task functions on the
# same workers: each queue is the topic "tasks.<queue>".
TASKS = {
    "default": {
        "BACKEND": "jobqueue.contrib.tasks.JobQueueBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"TOPIC_PREFIX": "tasks."},
    }
}

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []  # the demo's admin password is "admin"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "jobqueue": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "demo_project": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
