"""The scrape endpoint, guarded like the JSON API: a logged-in user or an API token
(``Authorization: Bearer jq_...``) holding :data:`PERMISSION`; never open."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ...api.auth import CHALLENGE, authenticate, require
from ...api.errors import ApiError
from ...permissions import VIEW_JOB
from .collector import JobQueueCollector

#: What a caller must hold to read the metrics (they tell what the jobs are doing, as the API's stats do).
PERMISSION = VIEW_JOB


def registry() -> CollectorRegistry:
    """A registry holding only jobqueue's collector (not the web process's own metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(JobQueueCollector())
    return reg


@csrf_exempt
def metrics(request: HttpRequest) -> HttpResponse:
    """``GET``: the metrics in Prometheus's text format (OpenMetrics if the scraper asks)."""
    if request.method not in ("GET", "HEAD"):
        response = HttpResponse("Use GET.\n", status=405, content_type="text/plain; charset=utf-8")
        response["Allow"] = "GET, HEAD"
        return response
    try:
        require(authenticate(request), PERMISSION)
    except ApiError as exc:
        response = HttpResponse(f"{exc.message}\n", status=exc.status, content_type="text/plain; charset=utf-8")
        if exc.status == 401:
            response["WWW-Authenticate"] = CHALLENGE
        return response
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    return HttpResponse(encoder(registry()), content_type=content_type)
