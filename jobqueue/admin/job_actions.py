"""What operators do to jobs: the change list's actions (cancel, requeue, change priority,
run now, delete) and the buttons of a job's page. Each needs its own permission; bulk
work goes through :mod:`.bulk`, a single job through its model's transitions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..constants import MAX_PRIORITY, MIN_PRIORITY
from ..exceptions import DuplicateJob, InvalidJob, InvalidTransition
from ..models import Job, JobStatus
from ..transitions.table import allows
from . import bulk
from .changelist import BoundedPaginator
from .forms import PriorityForm


class JobActionsMixin:
    """Actions and per-job buttons of :class:`~jobqueue.admin.jobs.JobAdmin`."""

    # Provided by ModelAdmin.
    admin_site: Any
    opts: Any
    get_object: Any
    message_user: Any
    log_change: Any

    # -- permissions -------------------------------------------------------------------

    def _perm(self, request: HttpRequest, codename: str) -> bool:
        return request.user.has_perm(f"jobqueue.{codename}")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "requeue_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "cancel_job")

    def has_change_priority_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "change_priority_job")

    def has_run_now_permission(self, request: HttpRequest) -> bool:
        return self._perm(request, "run_now_job")

    # -- a job's page -----------------------------------------------------------------

    def operations(self, request: HttpRequest, obj: Job) -> list[dict[str, Any]]:
        """The buttons of the detail page: the transitions this user may apply now."""
        ops: list[dict[str, Any]] = []
        if allows("cancel", obj.status) and self.has_cancel_permission(request):
            ops.append({"name": "cancel", "label": _("Cancel")})
        elif allows("abort", obj.status) and self.has_cancel_permission(request):
            ops.append({"name": "cancel", "label": _("Abort")})
        if allows("requeue", obj.status) and self.has_requeue_permission(request):
            ops.append({"name": "requeue", "label": _("Requeue")})
        if allows("run_now", obj.status) and self.has_run_now_permission(request):
            ops.append({"name": "run_now", "label": _("Run now")})
        if allows("set_priority", obj.status) and self.has_change_priority_permission(request):
            ops.append({"name": "priority", "label": _("Set priority"), "priority": obj.priority,
                        "min": MIN_PRIORITY, "max": MAX_PRIORITY})
        for op in ops:
            op["url"] = reverse("admin:jobqueue_job_operation", args=[obj.pk, op["name"]])
        return ops

    def operation_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """POST-only endpoint of the detail page's buttons: one transition of one job."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        checks = {
            "cancel": self.has_cancel_permission,
            "requeue": self.has_requeue_permission,
            "run_now": self.has_run_now_permission,
            "priority": self.has_change_priority_permission,
        }
        if name not in checks or not checks[name](request):
            raise PermissionDenied
        job = self.get_object(request, unquote(object_id))
        if job is None:
            raise Http404(_("No job with id %(id)s.") % {"id": object_id})
        try:
            with transaction.atomic():
                message = self._apply(request, job, name)
        except (InvalidTransition, InvalidJob, DuplicateJob) as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.log_change(request, job, message)
            self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobqueue_job_change", args=[job.pk]))

    def _apply(self, request: HttpRequest, job: Job, name: str) -> str:
        if name == "cancel":
            running = job.status == JobStatus.RUNNING
            job.cancel(_("cancelled by %(user)s in the admin") % {"user": request.user.get_username()})
            return _("Asked the running job to stop.") if running else _("Job cancelled.")
        if name == "requeue":
            job.requeue()
            return _("Job requeued.")
        if name == "run_now":
            job.run_now()
            return _("Job queued to run now.")
        form = PriorityForm(request.POST)
        if not form.is_valid():
            raise InvalidJob(" ".join(str(e) for errors in form.errors.values() for e in errors))
        job.set_priority(form.cleaned_data["priority"])
        return _("Priority set to %(p)s.") % {"p": job.priority}

    # -- actions -----------------------------------------------------------------------

    def _selection(self, request: HttpRequest, queryset: QuerySet) -> dict[str, Any]:
        """What an intermediate page needs to post the same selection back."""
        across = request.POST.get("select_across") == "1"
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        count = BoundedPaginator(queryset, 1).count_label if across else str(len(selected))
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "selected": selected,
            "select_across": across,
            "count_label": count,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }

    @admin.action(
        description=gettext_lazy("Cancel selected jobs (running ones are asked to stop)"),
        permissions=["cancel"],
    )
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = _("cancelled by %(user)s in the admin") % {"user": request.user.get_username()}
        result = bulk.cancel(queryset, reason=reason)
        self.message_user(
            request,
            ngettext("Cancelled %(n)s job.", "Cancelled %(n)s jobs.", result.changed) % {"n": result.changed},
            messages.SUCCESS,
        )
        if result.aborting:
            self.message_user(
                request,
                ngettext(
                    "Asked %(n)s running job to stop.", "Asked %(n)s running jobs to stop.", result.aborting
                )
                % {"n": result.aborting},
                messages.INFO,
            )

    @admin.action(
        description=gettext_lazy("Requeue selected failed or cancelled jobs"), permissions=["requeue"]
    )
    def requeue_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        result = bulk.requeue(queryset)
        self.message_user(
            request,
            ngettext("Requeued %(n)s job.", "Requeued %(n)s jobs.", result.changed) % {"n": result.changed},
            messages.SUCCESS,
        )
        if result.conflicts:
            self.message_user(
                request,
                ngettext(
                    "%(n)s job was left alone: another active job has its entity id.",
                    "%(n)s jobs were left alone: other active jobs have their entity ids.",
                    result.conflicts,
                )
                % {"n": result.conflicts},
                messages.WARNING,
            )

    @admin.action(description=gettext_lazy("Run selected scheduled jobs now"), permissions=["run_now"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        result = bulk.run_now(queryset)
        self.message_user(
            request,
            ngettext("Queued %(n)s scheduled job now.", "Queued %(n)s scheduled jobs now.", result.changed)
            % {"n": result.changed},
            messages.SUCCESS,
        )

    @admin.action(
        description=gettext_lazy("Change the priority of selected pending jobs"),
        permissions=["change_priority"],
    )
    def change_priority(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        form = PriorityForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            priority = form.cleaned_data["priority"]
            result = bulk.set_priority(queryset, priority)
            self.message_user(
                request,
                ngettext(
                    "Set the priority of %(n)s pending job to %(p)s.",
                    "Set the priority of %(n)s pending jobs to %(p)s.",
                    result.changed,
                )
                % {"n": result.changed, "p": priority},
                messages.SUCCESS,
            )
            return None
        context = {**self._selection(request, queryset), "form": form, "title": _("Change priority")}
        return TemplateResponse(request, "admin/jobqueue/job/change_priority.html", context)

    @admin.action(description=gettext_lazy("Delete selected jobs (not running ones)"), permissions=["delete"])
    def delete_jobs(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("post") == "yes":
            result = bulk.delete(queryset)
            self.message_user(
                request,
                ngettext("Deleted %(n)s job.", "Deleted %(n)s jobs.", result.changed) % {"n": result.changed},
                messages.SUCCESS,
            )
            return None
        context = {**self._selection(request, queryset), "title": _("Delete jobs")}
        return TemplateResponse(request, "admin/jobqueue/job/delete_jobs.html", context)
