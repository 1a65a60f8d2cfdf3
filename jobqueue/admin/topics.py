"""The topic admin: live counts and slot holders, pause / resume / unlock / requeue /
purge, and runtime settings that handler syncing never overwrites once edited here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import registry
from ..cron import next_run
from ..dashboard import TopicStats, topic_stats
from ..models import PENDING_STATUSES, Job, JobStatus, Topic
from . import bulk, display
from .forms import TopicForm


class TopicChangeList(ChangeList):
    """Attaches every shown topic's numbers, fetched together for the whole page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        topics = list(self.result_list)  # evaluates (and caches) the page's queryset
        stats = topic_stats([t.name for t in topics])
        for topic in topics:
            topic.jq_stats = stats[topic.name]


def _stats(obj: Topic) -> TopicStats:
    stats = getattr(obj, "jq_stats", None)
    if stats is None:
        stats = obj.jq_stats = topic_stats([obj.name])[obj.name]  # type: ignore[attr-defined]
    return stats


class TopicAdmin(admin.ModelAdmin):
    form = TopicForm
    empty_value_display = display.EMPTY
    list_display = (
        "name",
        "paused_badge",
        "queued_count",
        "running_count",
        "failed_count",
        "depth_display",
        "slots_display",
        "next_run_display",
    )
    list_filter = ("is_paused", "isolation")
    search_fields = ("name", "description")
    actions = ["pause", "resume", "unlock", "requeue_failed", "purge_queued", "reset_overrides"]
    runtime_fields = registry.RUNTIME_FIELDS

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": ["name", "description", "is_paused"]}),
            (
                _("Runtime settings"),
                {
                    "fields": list(self.runtime_fields),
                    "description": _("A field changed here is kept when the handler's defaults are synced."),
                },
            ),
        ]
        if obj is not None:
            fieldsets += [
                (_("Now"), {"fields": ["live_counts", "depth_display", "holders_display", "flow_display",
                                       "next_run_display"]}),
                (_("Bookkeeping"), {"fields": ["operator_overrides", "created_at", "updated_at"]}),
            ]
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Pausing goes through set_paused() so Redis hears of it: an action or a button.
        fields = ["is_paused", "operator_overrides", "created_at", "updated_at"]
        if obj is not None:
            fields += ["name", "live_counts", "depth_display", "holders_display", "flow_display", "next_run_display"]
        return fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form: Any = super().get_form(request, obj, change, **kwargs)
        form.user = request.user  # a class made for this request by modelform_factory
        return form

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type:
        return TopicChangeList

    def save_model(self, request: HttpRequest, obj: Topic, form: Any, change: bool) -> None:
        edited = [name for name in form.changed_data if name in registry.TOPIC_FIELDS]
        if edited:
            obj.operator_overrides = sorted(set(obj.operator_overrides or []) | set(edited))
        if change:
            # Only what the form changed: a pause set meanwhile by someone else stays.
            obj.save(update_fields=[*form.changed_data, "operator_overrides", "updated_at"])
        else:
            obj.save()

    # -- columns -----------------------------------------------------------------------

    def _count_link(self, obj: Topic, status: str) -> Any:
        n = _stats(obj).count(status)
        url = display.changelist_url("job", topic__name__exact=obj.name, status__exact=status)
        return format_html(
            '<a href="{}" class="jq-count jq-count-{}">{}</a>', url, status if n else "zero", n
        )

    @admin.display(description=gettext_lazy("state"), ordering="is_paused")
    def paused_badge(self, obj: Topic) -> Any:
        if obj.is_paused:
            return display.status_badge("paused", _("paused"))
        return format_html('<span class="jq-muted">{}</span>', _("active"))

    @admin.display(description=gettext_lazy("queued"))
    def queued_count(self, obj: Topic) -> Any:
        return self._count_link(obj, JobStatus.QUEUED)

    @admin.display(description=gettext_lazy("running"))
    def running_count(self, obj: Topic) -> Any:
        return self._count_link(obj, JobStatus.RUNNING)

    @admin.display(description=gettext_lazy("failed"))
    def failed_count(self, obj: Topic) -> Any:
        return self._count_link(obj, JobStatus.FAILED)

    @admin.display(description=gettext_lazy("waiting / scheduled"))
    def live_counts(self, obj: Topic) -> str:
        stats = _stats(obj)
        return f"{stats.count(JobStatus.WAITING)} / {stats.count(JobStatus.SCHEDULED)}"

    @admin.display(description=gettext_lazy("queue depth"))
    def depth_display(self, obj: Topic) -> Any:
        stats = _stats(obj)
        prios = format_html_join(
            " ",
            '<span class="jq-prio" title="{}">p{} × {}</span>',
            ((_("priority %(p)s") % {"p": p}, p, n) for p, n in stats.by_priority),
        )
        if stats.redis is None:
            redis_line = format_html('<span class="jq-muted">{}</span>', _("Redis unavailable"))
        else:
            redis_line = format_html(
                '<span class="jq-muted">{}</span>',
                _("Redis: %(queued)s queued · %(leased)s leased · %(scheduled)s later") % stats.redis,
            )
        return format_html("<div>{}</div><div>{}</div>", prios or display.EMPTY, redis_line)

    @admin.display(description=gettext_lazy("slots held by"))
    def holders_display(self, obj: Topic) -> Any:
        return display.holders(_stats(obj).holders)

    @admin.display(description=gettext_lazy("flow limits"))
    def flow_display(self, obj: Topic) -> Any:
        """The rate limit and the tokens left, the concurrency per key, the keys waiting."""
        if obj.flow_limits() is None:
            return format_html('<span class="jq-muted">{}</span>', _("no limits"))
        return display.flow(obj.flow_state(), obj.rate)

    @admin.display(description=gettext_lazy("slots"), ordering="concurrency")
    def slots_display(self, obj: Topic) -> Any:
        """How many of the topic's slots (its concurrency) are held, and by whom: one column,
        so that the list fits a 1400 px window beside the admin's sidebar and filters."""
        holders = _stats(obj).holders
        held = format_html(
            '<div class="jq-slots">{}</div>',
            _("%(held)s of %(allowed)s held") % {"held": len(holders) if holders is not None else "?",
                                                 "allowed": obj.concurrency},
        )
        return format_html("{}{}", held, display.holders(holders) if holders else "")

    @admin.display(description=gettext_lazy("next cron run"))
    def next_run_display(self, obj: Topic) -> Any:
        when = next_run(obj) if obj.cron else None
        if when is None:
            return display.EMPTY
        return format_html('<span title="{}">{}</span>', obj.cron, date_format(when, "DATETIME_FORMAT"))

    # -- permissions -------------------------------------------------------------------

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobqueue.pause_topic")

    def has_unlock_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobqueue.unlock_topic")

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobqueue.purge_topic")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobqueue.requeue_job")

    # -- actions -----------------------------------------------------------------------

    def _say(
        self,
        request: HttpRequest,
        singular: str,
        plural: str,
        n: int,
        level: int = messages.SUCCESS,
        **extra: Any,
    ) -> None:
        self.message_user(request, ngettext(singular, plural, n) % {"n": n, **extra}, level)

    @admin.action(description=gettext_lazy("Pause selected topics"), permissions=["pause"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        topics = list(queryset)
        for topic in topics:
            topic.set_paused(True)
        self._say(request, "Paused %(n)s topic.", "Paused %(n)s topics.", len(topics))

    @admin.action(description=gettext_lazy("Resume selected topics"), permissions=["pause"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        topics = list(queryset)
        for topic in topics:
            topic.set_paused(False)
        self._say(request, "Resumed %(n)s topic.", "Resumed %(n)s topics.", len(topics))

    @admin.action(
        description=gettext_lazy("Unlock selected topics (force-free their slots)"), permissions=["unlock"]
    )
    def unlock(self, request: HttpRequest, queryset: QuerySet) -> None:
        freed = sum(len(topic.unlock()) for topic in queryset)
        self._say(request, "Freed %(n)s slot.", "Freed %(n)s slots.", freed)

    @admin.action(
        description=gettext_lazy("Requeue the failed jobs of selected topics"), permissions=["requeue"]
    )
    def requeue_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        names = list(queryset.values_list("name", flat=True))
        result = bulk.requeue(Job.objects.filter(topic_id__in=names, status=JobStatus.FAILED))
        self._say(request, "Requeued %(n)s failed job.", "Requeued %(n)s failed jobs.", result.changed)
        if result.conflicts:
            self._say(
                request,
                "%(n)s job was left alone: another active job has its entity id.",
                "%(n)s jobs were left alone: other active jobs have their entity ids.",
                result.conflicts,
                messages.WARNING,
            )

    @admin.action(
        description=gettext_lazy("Purge selected topics (cancel their waiting, scheduled and queued jobs)"),
        permissions=["purge"],
    )
    def purge_queued(self, request: HttpRequest, queryset: QuerySet) -> None:
        names = list(queryset.values_list("name", flat=True))
        reason = _("purged by %(user)s in the admin") % {"user": request.user.get_username()}
        result = bulk.cancel(
            Job.objects.filter(topic_id__in=names, status__in=PENDING_STATUSES), reason=reason
        )
        self._say(request, "Purged %(n)s job.", "Purged %(n)s jobs.", result.changed)

    @admin.action(
        description=gettext_lazy("Forget operator changes (the handler's defaults apply again)"),
        permissions=["change"],
    )
    def reset_overrides(self, request: HttpRequest, queryset: QuerySet) -> None:
        topics = list(queryset)
        for topic in topics:
            topic.operator_overrides = []
            topic.save(update_fields=["operator_overrides", "updated_at"])
            spec = registry.get(topic.name)
            if spec is not None:
                Topic.objects.sync(spec)
        self._say(request, "Reset %(n)s topic.", "Reset %(n)s topics.", len(topics))

    # -- buttons on the topic's page ---------------------------------------------------

    def operations(self, request: HttpRequest, obj: Topic) -> list[dict[str, Any]]:
        ops = []
        if self.has_pause_permission(request):
            ops.append(
                {
                    "name": "resume" if obj.is_paused else "pause",
                    "label": _("Resume") if obj.is_paused else _("Pause"),
                }
            )
        if self.has_unlock_permission(request):
            ops.append({"name": "unlock", "label": _("Unlock")})
        if self.has_requeue_permission(request):
            ops.append({"name": "requeue_failed", "label": _("Requeue failed")})
        if self.has_purge_permission(request):
            ops.append({"name": "purge_queued", "label": _("Purge")})
        for op in ops:
            op["url"] = reverse("admin:jobqueue_topic_operation", args=[obj.pk, op["name"]])
        return ops

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
            context["operations"] = self.operations(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def operation_view(self, request: HttpRequest, object_id: str, name: str) -> HttpResponse:
        """POST-only endpoint of the topic page's buttons: runs the action on this topic."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        permission = {
            "pause": "pause",
            "resume": "pause",
            "unlock": "unlock",
            "requeue_failed": "requeue",
            "purge_queued": "purge",
        }.get(name)
        if permission is None or not getattr(self, f"has_{permission}_permission")(request):
            raise PermissionDenied
        topic = self.get_object(request, unquote(object_id))
        if topic is None:
            raise Http404(_("No topic with id %(id)s.") % {"id": object_id})
        action: Callable[[HttpRequest, QuerySet], None] = getattr(self, name)
        action(request, Topic.objects.filter(pk=topic.pk))
        self.log_change(request, topic, _("%(action)s from the topic page") % {"action": name})
        return HttpResponseRedirect(reverse("admin:jobqueue_topic_change", args=[topic.pk]))

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/operation/<str:name>/",
                self.admin_site.admin_view(self.operation_view),
                name="jobqueue_topic_operation",
            ),
            *super().get_urls(),
        ]
