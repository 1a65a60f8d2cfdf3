"""URLs of the demo project: the pipeline page at ``/``, the admin at ``/admin/`` and
jobqueue's JSON API at ``/jobs/api/``."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("jobs/api/", include("jobqueue.api.urls")),
    path("", include("demo_project.pipeline.urls")),
]
