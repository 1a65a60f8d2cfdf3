"""The metrics tally counts finished jobs by status too (``jobs:succeeded``, ``jobs:failed``,
``jobs:cancelled``): the job counts of ``GET /stats``, the dashboard and the topic list
come from it. A tally rolled up before it lacks them: they are counted here, once, for
the rows before its watermark (one grouped read of the finished jobs)."""

from django.db import migrations
from django.db.models import Count

FINISHED = ("succeeded", "failed", "cancelled")
PREFIX = "jobs:"


def count_finished(apps, schema_editor):
    Job = apps.get_model("jobqueue", "Job")
    MetricsTally = apps.get_model("jobqueue", "MetricsTally")
    db = schema_editor.connection.alias
    head = MetricsTally.objects.using(db).filter(topic="").first()
    if head is None or head.until is None:
        return  # nothing rolled up yet: the first roll-up counts them
    rows = (
        Job.objects.using(db).filter(status__in=FINISHED, finished_at__lt=head.until)
        .values_list("topic_id", "status").annotate(n=Count("*")).order_by()
    )
    counts = {}  # topic -> {"jobs:failed": n, ...}
    for topic, status, n in rows:
        counts.setdefault(topic, {})[PREFIX + status] = n
    for topic, fields in counts.items():
        row, _created = MetricsTally.objects.using(db).get_or_create(topic=topic)
        row.counts = {**{k: v for k, v in row.counts.items() if not k.startswith(PREFIX)}, **fields}
        row.save(update_fields=["counts"])


def drop_finished(apps, schema_editor):
    MetricsTally = apps.get_model("jobqueue", "MetricsTally")
    db = schema_editor.connection.alias
    for row in MetricsTally.objects.using(db).exclude(topic=""):
        row.counts = {k: v for k, v in row.counts.items() if not k.startswith(PREFIX)}
        row.save(update_fields=["counts"])


class Migration(migrations.Migration):
    dependencies = [
        ("jobqueue", "0009_metrics_tally"),
    ]

    operations = [migrations.RunPython(count_finished, drop_finished)]
