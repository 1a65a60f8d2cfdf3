from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("jobs/api/", include("jobqueue.api.urls")),
    path("metrics", include("jobqueue.contrib.metrics.urls")),
]
