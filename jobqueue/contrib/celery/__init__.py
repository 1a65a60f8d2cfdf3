"""Celery compatibility: ``manage.py jobbridge celery`` turns the messages a Celery
application sends (``delay()``, ``send_task()``) into jobs, read from its RabbitMQ or
Redis broker with kombu (``pip install "django-jobqueue[celery]"``).

Add ``"jobqueue.contrib.celery"`` to ``INSTALLED_APPS`` for the command and its checks.
The modules: :mod:`.protocol` (a message read as a job request, or refused),
:mod:`.bridge` (the consuming loop), :mod:`.checks` (``JOBQUEUE["CELERY_TASKS"]``).
Nothing here imports kombu until the bridge runs.
"""
