"""``path("jobs/api/", include("jobqueue.api.urls"))``."""

from django.urls import path, re_path

from . import views
from .endpoint import endpoint
from .schema import schema_view

app_name = "jobqueue_api"

VIEW = ("jobqueue.view_job",)

urlpatterns = [
    path(
        "jobs/",
        endpoint(GET=(views.list_jobs, VIEW), POST=(views.create_job, ("jobqueue.add_job",))),
        name="jobs",
    ),
    path(
        "jobs/<str:job_id>",
        endpoint(GET=(views.get_job, VIEW), DELETE=(views.delete_job, ("jobqueue.delete_job",))),
        name="job",
    ),
    path(
        "jobs/<str:job_id>/progress",
        endpoint(POST=(views.set_progress, ("jobqueue.change_job",))),
        name="job-progress",
    ),
    path(
        "jobs/<str:job_id>/cancel",
        endpoint(POST=(views.cancel_job, ("jobqueue.cancel_job",))),
        name="job-cancel",
    ),
    path(
        "jobs/<str:job_id>/requeue",
        endpoint(POST=(views.requeue_job, ("jobqueue.requeue_job",))),
        name="job-requeue",
    ),
    path("stats", endpoint(GET=(views.stats, VIEW)), name="stats"),
    path("stats/<str:topic>", endpoint(GET=(views.topic_stats, VIEW)), name="topic-stats"),
    path("health", endpoint(GET=(views.health, VIEW)), name="health"),
    path("schema", schema_view, name="schema"),
    # Anything else under the API answers in JSON too.
    re_path(r"^.*$", views.unknown_endpoint),
]
