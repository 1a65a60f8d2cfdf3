"""Turning handlers into views: method routing, authentication, permissions, JSON errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..conf import settings
from ..exceptions import InvalidPayload
from ..validation import parse_json
from .auth import CHALLENGE, authenticate, require
from .errors import ApiError, error_response, response_for

#: Bytes a request body may have beyond the payload limit (the other fields of a job).
ENVELOPE_BYTES = 16 * 1024

Handler = Callable[..., HttpResponse]


def endpoint(**methods: tuple[Handler, tuple[str, ...]]) -> Callable[..., HttpResponse]:
    """A view serving ``METHOD=(handler, permissions)``; the handler gets the request and
    the URL's keyword arguments once the caller is known and holds the permissions."""
    allowed = sorted(methods)

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        entry = methods.get(request.method or "")
        if entry is None:
            response = error_response(
                405, "method_not_allowed", f"{request.method} is not allowed here; use {', '.join(allowed)}."
            )
            response["Allow"] = ", ".join(allowed)
            return response
        handler, perms = entry
        try:
            user = authenticate(request)
            require(user, *perms)
            return handler(request, **kwargs)
        except Exception as exc:
            error = response_for(exc)
            if error is None:
                raise
            if error.status_code == 401:
                error["WWW-Authenticate"] = CHALLENGE
            return error

    return view


def body_limit() -> int:
    return int(settings.MAX_PAYLOAD_BYTES) + ENVELOPE_BYTES


def read_json(request: HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, refusing an oversized body before reading it (413),
    and anything that is not a JSON object (400)."""
    if request.content_type == "multipart/form-data":
        # Its stream may be read already (by the CSRF check of a session): never parse it.
        raise ApiError(400, "bad_json", "The request body must be JSON (Content-Type: application/json), not a form.")
    limit = body_limit()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "bad_request", "Invalid Content-Length header.") from None
    if declared > limit:
        raise _too_large(declared, limit)
    try:
        body = request.body
    except RequestDataTooBig:
        raise _too_large(declared, limit) from None
    if len(body) > limit:
        raise _too_large(len(body), limit)
    if not body.strip():
        if required:
            raise ApiError(400, "bad_json", "The request body must be a JSON object.")
        return {}
    try:
        data = parse_json(body.decode("utf-8"), parse_constant=_refuse_constant)
    except InvalidPayload:
        raise  # nested too deeply: a 400 like a payload over MAX_PAYLOAD_DEPTH
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_json", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "The request body must be a JSON object.")
    refuse_unstorable_text(data)
    return data


def refuse_unstorable_text(value: Any, where: str = "the request") -> None:
    """400 for text no database can store: a NUL character (PostgreSQL stores none, in
    text or JSON) or a lone surrogate (not UTF-8), anywhere in ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiError(400, "invalid", f"Text in {where} must not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "invalid", f"Text in {where} must be valid Unicode.") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"The request body is {size} bytes; the limit is {limit} bytes."
    )


def only_fields(data: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(
            400, "invalid", f"Unknown field(s): {', '.join(unknown)}. Known: {', '.join(sorted(allowed))}."
        )
