"""Who is calling one of jobqueue's views (the JSON API, the metrics): a bearer token
(``Authorization: Bearer jq_...``) or a logged-in session.

A session must also pass Django's CSRF check on unsafe methods; a token needs
none (a browser never sends it on its own).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from .models_api import ApiToken

#: The ``WWW-Authenticate`` challenge sent with every 401.
CHALLENGE = 'Bearer realm="jobqueue"'


class Refused(Exception):
    """The caller is not known (``status`` 401) or may not do this (403); ``code`` names why."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def authenticate(request: HttpRequest) -> Any:
    """The user making the request; :class:`Refused` (401/403) otherwise."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Refused(401, "invalid_token", "The Authorization header must be 'Bearer <key>'.")
        token = ApiToken.objects.authenticate(key.strip())
        if token is None:
            raise Refused(
                401, "invalid_token", "This API token is unknown, revoked, or its user is inactive."
            )
        request.user = token.user
        request.api_token = token  # type: ignore[attr-defined]
        return token.user
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise Refused(401, "not_authenticated", "Log in, or send 'Authorization: Bearer <API token>'.")
    if not user.is_active:
        raise Refused(401, "not_authenticated", "This account is inactive.")
    enforce_csrf(request)
    return user


def _no_view(request: HttpRequest) -> HttpResponse:  # CsrfViewMiddleware needs a get_response
    raise AssertionError("not called")


def enforce_csrf(request: HttpRequest) -> None:
    """Django's CSRF check, for a session-authenticated request (the views are csrf_exempt
    so that token requests need none)."""
    check = CsrfViewMiddleware(_no_view)
    check.process_request(request)
    rejected = check.process_view(request, None, (), {})  # type: ignore[arg-type]
    if rejected is not None:
        raise Refused(403, "csrf_failed", "CSRF verification failed; send the csrftoken as X-CSRFToken.")


def require(user: Any, *perms: str) -> None:
    """:class:`Refused` 403 unless ``user`` holds every permission in ``perms``."""
    missing = [perm for perm in perms if not user.has_perm(perm)]
    if missing:
        raise Refused(403, "permission_denied", f"This needs the {', '.join(missing)} permission.")
