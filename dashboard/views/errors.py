"""Error pages inside the console's layout."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

NOT_ALLOWED = "Your account is not allowed to do this; ask an administrator for access."


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """403: the whole page, or for htmx a form-sized message swapped where the request was."""
    message = str(exception) if exception and str(exception) else NOT_ALLOWED
    htmx = request.headers.get("HX-Request") == "true"
    template = "dashboard/errors.html#forbidden" if htmx else "dashboard/errors.html"
    response = render(request, template, {"message": message, "title": "Not allowed"}, status=403)
    patch_vary_headers(response, ["HX-Request"])
    return response
