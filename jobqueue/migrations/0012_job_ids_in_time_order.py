"""A new job's id is a version 7 UUID (time first, then random bits: see
``jobqueue.ids.new_job_id``). Only the model's default changes; no SQL runs, and the
ids already written stay as they are."""

from django.db import migrations, models

import jobqueue.ids


class Migration(migrations.Migration):
    dependencies = [
        ("jobqueue", "0011_finished_index_topic"),
    ]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="id",
            field=models.UUIDField(
                default=jobqueue.ids.new_job_id, editable=False, primary_key=True, serialize=False,
                verbose_name="id",
            ),
        ),
    ]
