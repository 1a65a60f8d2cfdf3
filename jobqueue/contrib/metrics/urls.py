"""``path("metrics", include("jobqueue.contrib.metrics.urls"))``: the scrape endpoint at ``/metrics``."""

from django.urls import path

from . import views

app_name = "jobqueue_metrics"

urlpatterns = [path("", views.metrics, name="metrics")]
