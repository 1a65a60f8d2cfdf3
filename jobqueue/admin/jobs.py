"""The job admin: a fast change list with bulk actions, a read-only detail page with
the chain around the job, and an "add job" form that goes through ``enqueue()``."""

from __future__ import annotations

import functools
import operator
import uuid
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import engine
from ..ids import SHORT_ID_LENGTH
from ..models import PENDING_STATUSES, Job, JobStatus
from . import display
from .changelist import BoundedPaginator, FastChangeList
from .dashboard_views import dashboard_fragment_view, dashboard_view
from .executions import ExecutionInline
from .forms import JobAddForm
from .job_actions import JobActionsMixin

#: Related jobs listed on the detail page per kind (children, dependents...).
RELATED_LIMIT = 50


class HasParentFilter(admin.SimpleListFilter):
    title = gettext_lazy("has parent")
    parameter_name = "has_parent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        if self.value() == "yes":
            return queryset.filter(parent__isnull=False)
        if self.value() == "no":
            return queryset.filter(parent__isnull=True)
        return None


def _id_digits(term: str) -> str | None:
    """The hex digits of what may be a whole job id or a part of one (4 to 32 digits,
    dashes dropped, lower case); ``None`` for anything else."""
    digits = term.replace("-", "").lower()
    if not 4 <= len(digits) <= 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return digits


def _id_range(digits: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The ids starting with ``digits`` (see :func:`_id_digits`): an index range scan."""
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


class JobAdmin(JobActionsMixin, admin.ModelAdmin):
    list_display = (
        "short_id",
        "topic_name",
        "status_column",
        "priority",
        "progress_column",
        "entity_id",
        "created",
        "duration_display",
    )
    list_display_links = ("short_id",)
    empty_value_display = display.EMPTY  # the dash of the computed columns, for the fields too
    list_filter = ("status", "topic", HasParentFilter)
    date_hierarchy = "created_at"
    search_fields = ("entity_id",)  # shows the search box; the lookups are get_search_results()'s
    search_help_text = gettext_lazy(
        "A job id (or its first characters, or the last ones shown in the list), an entity id, or text in the "
        "payload of the newest jobs listed. "
        "Prefix with id:, entity: or payload: to search only there (payload: also for text that looks like an id)."
    )
    #: Payload text is searched in this many of the newest jobs the filters leave, at most
    #: (a scan of every row's payload would take seconds at millions of jobs); the page says
    #: when older jobs were left out, and narrowing by date reaches further back.
    payload_search_rows = 20_000
    ordering = ("-created_at",)
    sortable_by = ("created", "priority")  # not every column: sorting a million rows needs an index
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = BoundedPaginator
    #: Columns the list never shows (and that may be large): not read for the list.
    changelist_defer = ("payload", "result", "error")
    actions = ["cancel_jobs", "requeue_jobs", "change_priority", "run_now", "delete_jobs"]
    inlines = [ExecutionInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "topic_link",
                    "status_badge",
                    "priority",
                    "progress_bar",
                    "queue_position",
                    "entity_id",
                    "worker_id",
                    "attempts_display",
                    "timeout",
                ]
            },
        ),
        (
            gettext_lazy("Timing"),
            {
                "fields": [
                    "created_at",
                    "run_after",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "duration_display",
                ]
            },
        ),
        (
            gettext_lazy("Chain"),
            {"fields": ["parent_link", "children_links", "dependencies_links", "dependents_links"]},
        ),
        (gettext_lazy("Payload and result"), {"fields": ["payload_json", "result_json"]}),
        (gettext_lazy("Error"), {"fields": ["error_text", "traceback_text"]}),
    ]
    readonly_fields = [name for _title, options in fieldsets for name in cast(list[str], options["fields"])]

    # -- permissions -------------------------------------------------------------------

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A job changes only through its transitions (actions and buttons); the detail
        # page is read-only, so a stale form can never overwrite what a worker wrote.
        return False if obj is not None else super().has_change_permission(request)

    # -- change list -------------------------------------------------------------------

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type:
        return FastChangeList

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes where the actions show (list or change form); 5.2 does not.
        extra = () if action_location is None else (action_location,)
        actions = super().get_actions(request, *extra)
        actions.pop("delete_selected", None)  # it lists every object; delete_jobs counts them
        return actions

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        scope, _sep, rest = term.partition(":")
        if scope in ("id", "entity", "payload") and rest.strip():
            term = rest.strip()
        else:
            scope = ""
        digits = _id_digits(term)
        q = Q(pk__in=[])
        if scope in ("", "id") and digits:
            low, high = _id_range(digits)
            q |= Q(pk__gte=low, pk__lte=high)
        if scope in ("", "entity"):
            q |= Q(entity_id=term)
        # Neither the end of an id (what lists show: see ids.short_id) nor payload text has an
        # index: both are read in the newest jobs only (every condition here is an index
        # range: no full scan). The payload is skipped for what looks like a job id (8+ hex
        # digits).
        newest: list[Q] = []
        if scope in ("", "id") and digits and len(digits) <= SHORT_ID_LENGTH:
            newest.append(Q(pk__iendswith=digits))
        if scope == "payload" or (scope == "" and not (digits and len(digits) >= 8)):
            newest.append(Q(payload__icontains=term))
        if newest:
            q |= self._in_newest(request, queryset, functools.reduce(operator.or_, newest))
        return queryset.filter(q), False

    def _in_newest(self, request: HttpRequest, queryset: QuerySet, condition: Q) -> Q:
        """``condition`` in the newest :attr:`payload_search_rows` jobs of ``queryset``; a
        message says so when older ones were left out."""
        rows = self.payload_search_rows
        # The newest job left out, if any: an index range of ``rows`` entries.
        left_out = queryset.order_by("-created_at").values_list("created_at", flat=True)[rows : rows + 1].first()
        if left_out is None:
            return condition
        messages.info(request, _(
            "The payload and the ends of job ids were searched in the newest %(rows)s jobs listed (created after "
            "%(after)s); older jobs were searched by whole id, the start of an id and entity id only. Narrow the "
            "list by date (or by topic or status) to search older jobs."
        ) % {"rows": formats.number_format(rows, force_grouping=True),
             "after": formats.date_format(timezone.localtime(left_out), "DATETIME_FORMAT")})
        return Q(created_at__gt=left_out) & condition

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"dashboard_url": reverse("admin:jobqueue_dashboard"), **(extra_context or {})}
        response = super().changelist_view(request, extra)
        context = getattr(response, "context_data", None)
        if context and isinstance(context.get("cl"), FastChangeList):
            context["selection_note_all"] = _("All %(total_count)s selected") % {
                "total_count": context["cl"].count_label
            }
        return response

    @admin.display(description=gettext_lazy("id"))
    def short_id(self, obj: Job) -> Any:
        return format_html('<span class="jq-mono">{}</span>', obj.short_id)

    @admin.display(description=gettext_lazy("topic"), ordering="topic")
    def topic_name(self, obj: Job) -> str:
        return obj.topic_id

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, obj: Job) -> Any:
        return display.status_badge(obj.status, obj.get_status_display())

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_column(self, obj: Job) -> Any:
        """The status with the attempts below it, and the worker of a running job: one
        column, so that the list fits a 1400 px window beside the sidebar and filters."""
        attempts = format_html('<div class="jq-muted jq-nowrap">{}</div>', _("%(n)s / %(max)s attempts") % {
            "n": obj.attempts, "max": obj.max_attempts})
        worker = ""
        if obj.status == JobStatus.RUNNING and obj.worker_id:
            worker = format_html('<div class="jq-muted jq-mono jq-clip" title="{}">{}</div>', obj.worker_id,
                                 obj.worker_id)
        return format_html("{}{}{}", display.status_badge(obj.status, obj.get_status_display()), attempts, worker)

    @admin.display(description=gettext_lazy("progress"))
    def progress_bar(self, obj: Job) -> Any:
        return display.progress_bar(obj.progress, obj.progress_message, obj.stage, obj.status)

    @admin.display(description=gettext_lazy("progress"))
    def progress_column(self, obj: Job) -> Any:
        # A job that has not started has nothing to show but a 0 %: keep the column quiet.
        if obj.status in PENDING_STATUSES and not (obj.progress or obj.progress_message or obj.stage):
            return display.EMPTY
        return display.progress_bar(obj.progress, obj.progress_message, obj.stage, obj.status)

    @admin.display(description=gettext_lazy("created"), ordering="created_at")
    def created(self, obj: Job) -> Any:
        if obj.created_at is None:
            return display.EMPTY
        # Date and time on two lines when the column is narrow.
        day, hour = display.local_time(obj.created_at).split(" ")
        return format_html('<span class="jq-nowrap">{}</span> <span class="jq-nowrap">{}</span>', day, hour)

    @admin.display(description=gettext_lazy("attempts"))
    def attempts_display(self, obj: Job) -> str:
        return f"{obj.attempts} / {obj.max_attempts}"

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, obj: Job) -> str:
        if obj.started_at and not obj.finished_at and obj.status == JobStatus.RUNNING:
            return display.duration(timezone.now() - obj.started_at) + " …"
        return display.duration(obj.duration)

    # -- detail page -------------------------------------------------------------------

    @admin.display(description=gettext_lazy("topic"))
    def topic_link(self, obj: Job) -> Any:
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a>',
            reverse("admin:jobqueue_topic_change", args=[obj.topic.pk]),
            obj.topic_id,
            display.changelist_url("job", topic__name__exact=obj.topic_id),
            _("its jobs"),
        )

    @admin.display(description=gettext_lazy("position in queue"))
    def queue_position(self, obj: Job) -> str:
        if obj.status != JobStatus.QUEUED:
            return display.EMPTY
        position = engine.safe_call(engine.position, obj.topic_id, str(obj.pk))
        if position is None:
            return _("not in Redis (run `jobs resync`)")
        return _("%(n)s jobs ahead") % {"n": position} if position else _("next to run")

    def _related(self, qs: QuerySet) -> Any:
        rows = list(qs.order_by("created_at").values_list("pk", "topic_id", "status")[: RELATED_LIMIT + 1])
        more = 0
        if len(rows) > RELATED_LIMIT:
            more = qs.count() - RELATED_LIMIT
            rows = rows[:RELATED_LIMIT]
        return display.job_links(rows, more)

    @admin.display(description=gettext_lazy("parent"))
    def parent_link(self, obj: Job) -> Any:
        return self._related(Job.objects.filter(pk=obj.parent_id)) if obj.parent_id else display.EMPTY

    @admin.display(description=gettext_lazy("children"))
    def children_links(self, obj: Job) -> Any:
        return self._related(Job.objects.filter(parent_id=obj.pk))

    @admin.display(description=gettext_lazy("depends on"))
    def dependencies_links(self, obj: Job) -> Any:
        return self._related(obj.depends_on.all())

    @admin.display(description=gettext_lazy("dependents"))
    def dependents_links(self, obj: Job) -> Any:
        return self._related(obj.dependents.all()) if obj.has_dependents else display.EMPTY

    @admin.display(description=gettext_lazy("payload"))
    def payload_json(self, obj: Job) -> Any:
        return display.pretty_json(obj.payload)

    @admin.display(description=gettext_lazy("result"))
    def result_json(self, obj: Job) -> Any:
        return display.pretty_json(obj.result)

    @admin.display(description=gettext_lazy("error"))
    def error_text(self, obj: Job) -> Any:
        return display.pre(obj.error)

    @admin.display(description=gettext_lazy("traceback (last attempt)"))
    def traceback_text(self, obj: Job) -> Any:
        last = (
            obj.executions.exclude(traceback="")
            .order_by("-attempt")
            .values_list("traceback", flat=True)
            .first()
        )
        return display.pre(last or "")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(
                operations=self.operations(request, obj),
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- add ---------------------------------------------------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = JobAddForm(request.POST if request.method == "POST" else None, user=request.user)
        if form.is_bound and form.is_valid():
            job = form.enqueue()
            if job is not None:
                self.log_addition(request, job, [{"added": {}}])
                self.message_user(
                    request,
                    _("Job %(id)s enqueued in %(topic)s.") % {"id": job.short_id, "topic": job.topic_id},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:jobqueue_job_change", args=[job.pk]))
        adminform = form.admin_form(self)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Add job"),
            "subtitle": None,
            "adminform": adminform,
            "object_id": None,
            "original": None,
            "is_popup": False,
            "to_field": None,
            "media": self.media + adminform.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(cast(Any, form), []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, form_url=form_url)

    # -- URLs --------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "dashboard/", wrap(lambda request: dashboard_view(self, request)), name="jobqueue_dashboard"
            ),
            path(
                "dashboard/fragment/",
                wrap(lambda request: dashboard_fragment_view(self, request)),
                name="jobqueue_dashboard_fragment",
            ),
            path(
                "<path:object_id>/operation/<str:name>/",
                wrap(self.operation_view),
                name="jobqueue_job_operation",
            ),
            *super().get_urls(),
        ]
