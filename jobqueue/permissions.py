"""The permissions the admin and the API check when a user enqueues a job.

Code and management commands are trusted: ``Job.objects.enqueue()`` checks no user.
"""

from __future__ import annotations

#: Who may see a job (and so what a pending entity's job holds).
VIEW_JOB = "jobqueue.view_job"
#: Who may change a job's priority, also by enqueueing a pending entity again.
CHANGE_PRIORITY = "jobqueue.change_priority_job"
