"""The ``(status, finished_at)`` index gets ``topic`` last, so that the jobs finished per
topic in a window (the dashboard's last 24 h) are counted from the index alone."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobqueue", "0010_tally_finished_jobs"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="job",
            name="jobqueue_job_finished_idx",
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(fields=["status", "finished_at", "topic"], name="jobqueue_job_finished_idx"),
        ),
    ]
