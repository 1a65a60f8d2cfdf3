"""Errors as JSON: ``{"error": {"code": "...", "message": "..."}}`` with a fitting status."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse

from ..auth import Refused
from ..exceptions import DuplicateJob, InvalidJob, InvalidTransition, PayloadTooLarge, UnknownTopic


class ApiError(Refused):
    """Raised by a view to answer with an error (any status, with details)."""

    def __init__(self, status: int, code: str, message: str, **details: Any):
        super().__init__(status, code, message)
        self.details = details


def error_response(status: int, code: str, message: str, **details: Any) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JsonResponse({"error": body}, status=status)


def response_for(exc: Exception) -> JsonResponse | None:
    """The error response for an exception the API knows, else ``None`` (a server error)."""
    if isinstance(exc, Refused):  # an ApiError, or the caller refused by authentication
        return error_response(exc.status, exc.code, exc.message, **getattr(exc, "details", {}))
    if isinstance(exc, PayloadTooLarge):
        return error_response(413, "payload_too_large", str(exc))
    if isinstance(exc, UnknownTopic):
        return error_response(400, "unknown_topic", str(exc))
    if isinstance(exc, InvalidJob):
        return error_response(400, "invalid", str(exc))
    if isinstance(exc, DuplicateJob):
        existing = str(exc.existing_id) if exc.existing_id is not None else None
        return error_response(409, "duplicate_job", str(exc), existing_id=existing)
    if isinstance(exc, InvalidTransition):
        return error_response(409, "invalid_transition", str(exc))
    if isinstance(exc, PermissionDenied):
        return error_response(403, "permission_denied", str(exc) or "You do not have permission to do this.")
    if isinstance(exc, Http404):
        return error_response(404, "not_found", str(exc) or "Not found.")
    return None
