from django.urls import path

from . import views

app_name = "pipeline"

urlpatterns = [
    path("", views.index, name="index"),
    path("jobs/<uuid:job_id>/status.json", views.status, name="status"),
]
