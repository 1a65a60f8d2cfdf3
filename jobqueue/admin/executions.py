"""Executions (one row per attempt): read-only, inline on a job's page and on their own."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy

from ..models import Execution
from . import display
from .changelist import BoundedPaginator, FastChangeList


class ExecutionDisplay:
    """Columns shared by the inline and the execution admin; output is always escaped."""

    @admin.display(description=gettext_lazy("outcome"), ordering="outcome")
    def outcome_badge(self, obj: Execution) -> Any:
        return display.status_badge(obj.outcome, obj.get_outcome_display())

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, obj: Execution) -> str:
        return display.duration(obj.duration)

    @admin.display(description=gettext_lazy("error"))
    def error_text(self, obj: Execution) -> Any:
        return display.pre(obj.error)

    @admin.display(description=gettext_lazy("stdout"))
    def stdout_text(self, obj: Execution) -> Any:
        return display.pre(obj.stdout)

    @admin.display(description=gettext_lazy("stderr"))
    def stderr_text(self, obj: Execution) -> Any:
        return display.pre(obj.stderr)

    @admin.display(description=gettext_lazy("traceback"))
    def traceback_text(self, obj: Execution) -> Any:
        return display.pre(obj.traceback)

    @admin.display(description=gettext_lazy("job"))
    def job_link(self, obj: Execution) -> Any:
        return display.job_link(obj.job_id)


READ_ONLY_FIELDS = (
    "attempt",
    "outcome_badge",
    "worker_id",
    "hostname",
    "pid",
    "started_at",
    "finished_at",
    "duration_display",
    "exit_code",
    "error_class",
    "error_text",
    "stdout_text",
    "stderr_text",
    "traceback_text",
)


class ExecutionInline(ExecutionDisplay, admin.StackedInline):
    model = Execution
    extra = 0
    can_delete = False
    ordering = ("-attempt",)
    fields = readonly_fields = READ_ONLY_FIELDS
    classes = ("jq-executions",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExecutionAdmin(ExecutionDisplay, admin.ModelAdmin):
    list_display = (
        "__str__",
        "job_link",
        "attempt",
        "outcome_badge",
        "worker_id",
        "hostname",
        "started_at",
        "duration_display",
        "exit_code",
    )
    list_filter = ("outcome",)
    search_fields = ("worker_id",)
    search_help_text = gettext_lazy("A job id, or a worker id.")
    ordering = ("-pk",)  # newest first, along the primary key index
    sortable_by = ()
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = BoundedPaginator
    changelist_defer = ("stdout", "stderr", "traceback", "error")
    fields = readonly_fields = ("job_link", *READ_ONLY_FIELDS)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type:
        return FastChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(job_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(worker_id=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
