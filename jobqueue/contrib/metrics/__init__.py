"""Prometheus metrics of every topic: ``pip install django-jobqueue[prometheus]``, then

.. code-block:: python

    # urls.py
    path("metrics", include("jobqueue.contrib.metrics.urls")),

The view answers only a logged-in user or an API token (``Authorization: Bearer jq_...``)
holding ``jobqueue.view_job``, as the JSON API does. Its numbers come from Redis (the
counters and histograms the transitions keep, queue sizes, the worker registry) and the
database (waiting jobs, the oldest queued job), read at each scrape, so every web
process answers the same whatever the number of workers and machines.
"""

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed wherever the tests run
    raise ImportError(
        "jobqueue.contrib.metrics needs prometheus_client: pip install 'django-jobqueue[prometheus]'"
    ) from exc
