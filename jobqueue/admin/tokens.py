"""Issuing API tokens in the admin: the key is shown once, on the page after "Save".

A user issues tokens for themselves; with ``jobqueue.issue_token_for_others`` also for
users who hold no more permissions than they do, and only then sees (and may revoke)
other users' tokens (see :func:`~jobqueue.models_api.issue_refusal`).

Registered by ``jobqueue.admin``: ``admin.site.register(ApiToken, ApiTokenAdmin)``.
"""

from __future__ import annotations

import secrets
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from ..models_api import ISSUE_FOR_OTHERS, KEY_PREFIX, SHOWN_CHARACTERS, hash_key, issue_refusal

KEY_PAGE = """{% extends "admin/base_site.html" %}
{% block content %}
<h1>{{ title }}</h1>
<p>Copy this key now: it is stored only as a hash and cannot be shown again.</p>
<p><code style="font-size: 1.2em; user-select: all">{{ key }}</code></p>
<p>Send it as <code>Authorization: Bearer &lt;key&gt;</code>;
it acts as {{ token.user }}, with that user's permissions.</p>
<p><a href="{{ changelist_url }}">Back to the tokens</a></p>
{% endblock %}
"""


class ApiTokenForm(forms.ModelForm):
    """Refuses a token its issuer may not give (a form error on ``user``)."""

    #: The user issuing the token, set for each request by :meth:`ApiTokenAdmin.get_form`.
    issuer: Any = None

    def clean_user(self) -> Any:
        user = self.cleaned_data["user"]
        refusal = issue_refusal(self.issuer, user)
        if refusal is not None:
            raise forms.ValidationError(refusal)
        return user


class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("__str__", "user", "created_at", "last_used_at")
    list_filter = ("created_at", "last_used_at")
    search_fields = ("name", "prefix", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["name", "user"] if obj is None else ["name", "user", "prefix", "created_at", "last_used_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # A token's user never changes: issue a new token instead.
        return self.readonly_fields if obj is None else (*self.readonly_fields, "user")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form: Any = super().get_form(request, obj, change, **kwargs)
        form.issuer = request.user  # a class made for this request by modelform_factory
        return form

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        tokens = super().get_queryset(request)
        return tokens if request.user.has_perm(ISSUE_FOR_OTHERS) else tokens.filter(user_id=request.user.pk)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            obj.key_hash = hash_key(key)
            obj.prefix = key[:SHOWN_CHARACTERS]
            request._jobqueue_new_key = key  # type: ignore[attr-defined]  # shown by response_add
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None) -> HttpResponse:
        key = getattr(request, "_jobqueue_new_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": _("API token issued"),
            "key": key,
            "token": obj,
            "changelist_url": reverse(f"{self.admin_site.name}:jobqueue_apitoken_changelist"),
        }
        html = engines["django"].from_string(KEY_PAGE).render(context, request)
        response = HttpResponse(html)
        response["Cache-Control"] = "no-store"
        return response
