"""The worker records a success in one statement only when nothing follows it."""

import pytest

from jobqueue.models import Job
from jobqueue.signals import job_finished, job_succeeded
from jobqueue.transitions.followups import quiet


@pytest.mark.django_db
def test_the_tasks_bridge_does_not_slow_other_topics():
    from tests.tasks_app.tasks import add  # a django.tasks task of the test settings' backend

    plain = Job.objects.enqueue("echo", {"x": 1})
    task_job = Job.objects.get(pk=add.enqueue(2, 3).id)
    assert quiet(plain, None)
    assert not quiet(task_job, None)


@pytest.mark.django_db
@pytest.mark.parametrize("signal", [job_finished, job_succeeded])
def test_a_project_receiver_turns_the_shortcut_off(signal):
    job = Job.objects.enqueue("echo", {"x": 1})

    def receiver(sender, job, **kwargs):
        pass

    signal.connect(receiver, dispatch_uid="project.receiver")
    try:
        assert not quiet(job, None)
    finally:
        signal.disconnect(dispatch_uid="project.receiver")
    assert quiet(job, None)


@pytest.mark.django_db
def test_a_successor_or_a_dependent_turns_the_shortcut_off():
    from jobqueue.chaining import Next

    job = Job.objects.enqueue("echo", {"x": 1})
    assert not quiet(job, Next("echo", {}))
    Job.objects.enqueue("echo", {}, depends_on=[job])
    job.refresh_from_db()
    assert not quiet(job, None)
