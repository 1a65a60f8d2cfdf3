from django.apps import AppConfig


class PipelineConfig(AppConfig):
    """A three-topic text pipeline: ingest -> count -> report (handlers in ``jobs.py``)."""

    name = "demo_project.pipeline"
    label = "pipeline"
    verbose_name = "Demo pipeline"
