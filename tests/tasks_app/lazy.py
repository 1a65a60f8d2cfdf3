"""A task module no test imports: only a worker, by the path a job records."""

from jobqueue.contrib.tasks.compat import task


@task
def ping():
    return "pong"
