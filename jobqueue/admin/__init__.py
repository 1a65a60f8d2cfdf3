"""The Django admin as jobqueue's operations console.

``JobAdmin`` (list, bulk actions, detail page, add form, and the dashboard at
``admin/jobqueue/job/dashboard/``), ``TopicAdmin``, a read-only ``ExecutionAdmin`` and
the API's ``ApiTokenAdmin`` are registered on the default admin site; register them on
your own site with ``my_site.register(Job, JobAdmin)`` and so on.
"""

from django.contrib import admin

from ..models import Execution, Job, Topic
from ..models_api import ApiToken
from .executions import ExecutionAdmin
from .jobs import JobAdmin
from .tokens import ApiTokenAdmin
from .topics import TopicAdmin

admin.site.register(Job, JobAdmin)
admin.site.register(Topic, TopicAdmin)
admin.site.register(Execution, ExecutionAdmin)
admin.site.register(ApiToken, ApiTokenAdmin)  # the JSON API's tokens, issued here

__all__ = ["ApiTokenAdmin", "ExecutionAdmin", "JobAdmin", "TopicAdmin"]
