"""URLs of the demo project: the pipeline page at ``/`` and the admin at ``/admin/``."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("demo_project.pipeline.urls")),
]
