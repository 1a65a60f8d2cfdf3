"""``path("jobs/api/", include("jobqueue.api.urls"))``."""

from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from ..permissions import VIEW_JOB
from . import views
from .endpoint import endpoint
from .schema import schema_view

app_name = "jobqueue_api"

VIEW = (VIEW_JOB,)

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
    # Neither changes anything: exempt from CSRF so that any method gets their JSON answer
    # (405, 404), not Django's HTML 403. [\s\S]: a path with a line break is unknown too.
    path("schema", csrf_exempt(schema_view), name="schema"),
    re_path(r"^[\s\S]*$", csrf_exempt(views.unknown_endpoint)),
]
