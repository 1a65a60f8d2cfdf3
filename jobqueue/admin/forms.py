"""Forms of the admin: add a job, change priorities, edit a topic's runtime settings."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib.admin import helpers
from django.utils.translation import gettext_lazy as _

from .. import registry
from ..conf import settings
from ..constants import SHELL_PERMISSION, SHELL_TOPIC
from ..cron_schedule import CronSchedule
from ..exceptions import DuplicateJob, InvalidJob, InvalidPayload, UnknownTopic
from ..models import Job, Topic
from ..permissions import CHANGE_PRIORITY, enqueue_refusal
from ..validation import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    encode_payload,
    parse_duration,
    parse_json,
    validate_entity_id,
    validate_priority,
    validate_topic_name,
)


def _invalid(exc: Exception) -> forms.ValidationError:
    return forms.ValidationError(str(exc))


class JobAddForm(forms.Form):
    """Enqueue one job with :meth:`JobManager.enqueue`, showing its refusals on the form."""

    topic = forms.ChoiceField(label=_("Topic"))
    payload = forms.CharField(
        label=_("Payload"),
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80, "class": "jq-mono", "spellcheck": "false"}),
        help_text=_("A JSON value, usually an object."),
    )
    priority = forms.IntegerField(
        label=_("Priority"),
        required=False,
        min_value=MIN_PRIORITY,
        max_value=MAX_PRIORITY,
        help_text=_("%(min)s..%(max)s, higher runs first; empty for the topic's default.")
        % {"min": MIN_PRIORITY, "max": MAX_PRIORITY},
    )
    entity_id = forms.CharField(
        label=_("Entity id"),
        required=False,
        strip=False,
        help_text=_("Optional dedupe key: one active job per entity and topic."),
    )
    delay = forms.CharField(
        label=_("Delay"), required=False, help_text=_("Run after this long: 30s, 5m, 2h, 1d; empty for now.")
    )

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.user = user
        names = set(Topic.objects.values_list("name", flat=True)) | set(registry.topics())
        if not self.may_use_shell():
            names.discard(SHELL_TOPIC)
        elif settings.SHELL_TOPIC is True:
            names.add(SHELL_TOPIC)  # offered before its first job creates the Topic row
        topic = cast(forms.ChoiceField, self.fields["topic"])
        topic.choices = [("", "---------")] + [(n, n) for n in sorted(names)]

    def may_use_shell(self) -> bool:
        return bool(self.user is not None and self.user.has_perm(SHELL_PERMISSION))

    def clean_topic(self) -> str:
        name = self.cleaned_data["topic"]
        try:
            validate_topic_name(name)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        refusal = enqueue_refusal(self.user, name)  # the shell topic, or a chain that leads into it
        if refusal is not None:
            raise forms.ValidationError(refusal)
        return name

    def clean_payload(self) -> Any:
        text = self.cleaned_data["payload"]
        try:
            value = parse_json(text)
        except InvalidPayload as exc:
            raise _invalid(exc) from None
        except ValueError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s") % {"error": exc}) from None
        try:
            encode_payload(value)
        except InvalidJob as exc:
            raise _invalid(exc) from None
        return value

    def clean_priority(self) -> int | None:
        value = self.cleaned_data["priority"]
        if value is None:
            return None
        try:
            return validate_priority(value)
        except InvalidJob as exc:
            raise _invalid(exc) from None

    def clean_entity_id(self) -> str | None:
        value = self.cleaned_data["entity_id"] or None
        try:
            return validate_entity_id(value)
        except InvalidJob as exc:
            raise _invalid(exc) from None

    def clean_delay(self) -> float | None:
        text = self.cleaned_data["delay"].strip()
        if not text:
            return None
        try:
            return parse_duration(text).total_seconds()
        except ValueError as exc:
            raise _invalid(exc) from None

    def enqueue(self) -> Job | None:
        """Enqueue the job; on a refusal, add the message to the form and return ``None``."""
        data = self.cleaned_data
        try:
            return Job.objects.enqueue(
                data["topic"],
                data["payload"],
                priority=data["priority"],
                entity_id=data["entity_id"],
                delay=data["delay"],
                raise_priority=bool(self.user is not None and self.user.has_perm(CHANGE_PRIORITY)),
            )
        except (InvalidJob, DuplicateJob) as exc:
            self.add_error(self.field_for(exc), str(exc))
            return None

    @staticmethod
    def field_for(exc: Exception) -> str | None:
        """The form field an enqueue refusal is about (``None``: the form as a whole)."""
        if isinstance(exc, DuplicateJob):
            return "entity_id"
        if isinstance(exc, UnknownTopic):
            return "topic"
        if isinstance(exc, InvalidPayload):  # also PayloadTooLarge
            return "payload"
        message = str(exc).lower()
        for prefix, name in (
            ("priority", "priority"),
            ("entity", "entity_id"),
            ("delay", "delay"),
            ("invalid topic", "topic"),
            ("payload", "payload"),
            ("shell", "payload"),
        ):
            if message.startswith(prefix):
                return name
        return None

    def admin_form(self, model_admin: Any) -> helpers.AdminForm:
        fieldsets = [(None, {"fields": ["topic", "payload", "priority", "entity_id", "delay"]})]
        # AdminForm only reads what every form has; its ModelForm annotation is too narrow.
        return helpers.AdminForm(cast(Any, self), fieldsets, {}, readonly_fields=[], model_admin=model_admin)


class PriorityForm(forms.Form):
    """The intermediate page of the "change priority" action."""

    priority = forms.IntegerField(
        label=_("New priority"),
        min_value=MIN_PRIORITY,
        max_value=MAX_PRIORITY,
        help_text=Job._meta.get_field("priority").help_text,
    )


class TopicForm(forms.ModelForm):
    """A topic's runtime settings, checked with the rules ``@handler`` applies."""

    #: The user editing the topic, set for each request by ``TopicAdmin.get_form``.
    user: Any = None

    class Meta:
        model = Topic
        fields = ["name", *registry.TOPIC_FIELDS]

    def clean_next_topic(self) -> str:
        value = self.cleaned_data.get("next_topic", "")
        if value:
            try:
                validate_topic_name(value)
            except InvalidJob as exc:
                raise _invalid(exc) from None
            # Chaining into a topic is enqueueing its jobs: the same permissions. A chain set
            # up by someone else is kept when other settings change.
            refusal = enqueue_refusal(self.user, value) if value != self.instance.next_topic else None
            if refusal is not None:
                raise forms.ValidationError(refusal)
        return value

    def clean_cron(self) -> str:
        value = (self.cleaned_data.get("cron") or "").strip()
        if value:
            try:
                CronSchedule(value)
            except ValueError as exc:
                raise _invalid(exc) from None
        return value
