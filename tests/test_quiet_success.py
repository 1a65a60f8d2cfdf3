"""The worker records a success in one statement only when no receiver acts on it."""

import pytest

from jobqueue.models import Job
from jobqueue.signals import job_finished, quiet_success


@pytest.mark.django_db
def test_the_tasks_backend_receiver_does_not_slow_other_topics():
    from tests.tasks_app.tasks import add  # a django.tasks task of the test settings' backend

    plain = Job.objects.enqueue("echo", {"x": 1})
    task_job = Job.objects.get(pk=add.enqueue(2, 3).id)
    assert quiet_success(plain)
    assert not quiet_success(task_job)


@pytest.mark.django_db
def test_a_project_receiver_turns_the_shortcut_off():
    job = Job.objects.enqueue("echo", {"x": 1})

    def receiver(sender, job, **kwargs):
        pass

    job_finished.connect(receiver, dispatch_uid="project.receiver")
    try:
        assert not quiet_success(job)
    finally:
        job_finished.disconnect(dispatch_uid="project.receiver")
    assert quiet_success(job)
