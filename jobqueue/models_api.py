"""API tokens: bearer keys for the JSON API, issued in the admin, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

#: Every key starts with this, so a leaked one is easy to recognise (e.g. by secret scanners).
KEY_PREFIX = "jq_"
#: Characters of a key kept in clear, to tell tokens apart in the admin.
SHOWN_CHARACTERS = 8
#: ``last_used_at`` is written at most this often per token, not on every request.
LAST_USED_PRECISION = timedelta(minutes=1)
#: Lets a user issue, see and revoke other users' tokens (without it: only their own).
ISSUE_FOR_OTHERS = "jobqueue.issue_token_for_others"


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key`` (a random 256-bit key needs no slow hash)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiTokenManager(models.Manager["ApiToken"]):
    def issue(self, user: Any, name: str = "") -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns it with its key, which is never stored or shown again."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        token = self.create(user=user, name=name, key_hash=hash_key(key), prefix=key[:SHOWN_CHARACTERS])
        return token, key

    def authenticate(self, key: str) -> ApiToken | None:
        """The token whose key is ``key`` (its user active), or ``None``; records its use."""
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        token = self.select_related("user").filter(key_hash=hash_key(key)).first()
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            type(token).objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token


class ApiToken(models.Model):
    """A bearer key for the JSON API, acting as its user (with that user's permissions)."""

    name = models.CharField(_("name"), max_length=100, blank=True, help_text=_("What the token is for."))
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="jobqueue_api_tokens",
    )
    key_hash = models.CharField(_("key hash"), max_length=64, unique=True, editable=False)
    prefix = models.CharField(_("key starts with"), max_length=SHOWN_CHARACTERS, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)

    objects = ApiTokenManager()

    class Meta:
        app_label = "jobqueue"
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at"]
        permissions = [("issue_token_for_others", "Can issue and revoke API tokens of other users")]

    def __str__(self) -> str:
        label = self.name or _("token")
        return f"{label} ({self.prefix}…)"


def issue_refusal(issuer: Any, user: Any) -> str | None:
    """Why ``issuer`` may not issue a token acting as ``user`` (``None``: they may).

    Anyone may issue tokens for themselves. For another user it takes
    :data:`ISSUE_FOR_OTHERS`, and a token never holds more than its issuer: the user
    must be active, not a superuser, and hold no permission the issuer lacks. A
    superuser may issue tokens for anyone.
    """
    if issuer is None or not issuer.is_active:
        return str(_("Only an active user may issue tokens."))
    if issuer.is_superuser or issuer.pk == user.pk:
        return None
    if not issuer.has_perm(ISSUE_FOR_OTHERS):
        return str(_("You may issue tokens only for yourself."))
    if not user.is_active:
        return str(_("%(user)s is inactive.") % {"user": user})
    if user.is_superuser:
        return str(_("Only a superuser may issue a token for a superuser."))
    extra = sorted(user.get_all_permissions() - issuer.get_all_permissions())
    if extra:
        return str(_("%(user)s holds permissions you do not: %(perms)s.") % {"user": user, "perms": ", ".join(extra)})
    return None
