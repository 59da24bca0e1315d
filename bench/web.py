"""The project's URLs plus a bare view: the baseline of ``bench live``'s HTTP ratios.

Never part of the product: only ``bench.settings`` (the benchmark's gunicorn) uses it.
"""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from config.urls import urlpatterns as project


@require_GET
@permission_required("store.view_dashboard", raise_exception=True)
def bare(request: HttpRequest) -> HttpResponse:
    """Logged in (LoginRequiredMiddleware), the panels' permission check, then nothing."""
    return HttpResponse("ok")


urlpatterns = [*project, path("bench/bare/", bare, name="bench-bare")]
