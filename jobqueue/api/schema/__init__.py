"""The API's OpenAPI 3 document, written by hand to match :mod:`jobqueue.api.views`.

:mod:`.components` holds the schemas and responses, :mod:`.paths` the operations.
``tests/test_api_schema.py`` fuzzes every operation against the document, so a view
and its description cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from ... import __version__
from .components import RESPONSES, SCHEMAS, TOPIC, TOPIC_PATTERN, components
from .paths import paths

__all__ = ["RESPONSES", "SCHEMAS", "TOPIC", "TOPIC_PATTERN", "build_schema", "components", "paths", "schema_view"]


def build_schema(base_path: str) -> dict[str, Any]:
    """The document, with ``base_path`` (where the API is included) as its server URL."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "jobqueue API", "version": __version__},
        "servers": [{"url": base_path.rstrip("/") or "/"}],
        "security": [{"bearerAuth": []}, {"sessionAuth": []}],
        "paths": paths(),
        "components": components(),
    }


def schema_view(request: HttpRequest) -> HttpResponse:
    """The document itself, readable without logging in (it holds no data)."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": {"code": "method_not_allowed", "message": "Use GET."}}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    base = reverse("jobqueue_api:stats")[: -len("stats")]
    return JsonResponse(build_schema(base))
