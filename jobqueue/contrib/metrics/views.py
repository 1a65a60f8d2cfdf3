"""The scrape endpoint, guarded like the JSON API: a logged-in user or an API token
(``Authorization: Bearer jq_...``) holding :data:`PERMISSION`; never open."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ...auth import CHALLENGE, Refused, authenticate, require
from ...permissions import VIEW_JOB
from .collector import gather
from .exposition import CONTENT_TYPE, render

#: What a caller must hold to read the metrics (they tell what the jobs are doing, as the API's stats do).
PERMISSION = VIEW_JOB


@csrf_exempt
def metrics(request: HttpRequest) -> HttpResponse:
    """``GET``: every topic's metrics in Prometheus's text format (and nothing of the web
    process itself)."""
    if request.method not in ("GET", "HEAD"):
        response = HttpResponse("Use GET.\n", status=405, content_type="text/plain; charset=utf-8")
        response["Allow"] = "GET, HEAD"
        return response
    try:
        require(authenticate(request), PERMISSION)
    except Refused as exc:
        response = HttpResponse(f"{exc.message}\n", status=exc.status, content_type="text/plain; charset=utf-8")
        if exc.status == 401:
            response["WWW-Authenticate"] = CHALLENGE
        return response
    return HttpResponse(render(gather()), content_type=CONTENT_TYPE)
