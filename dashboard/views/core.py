"""The dashboard page and the liveness probe."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard import panels
from dashboard.access import permission_required
from dashboard.http import HtmxHttpRequest
from dashboard.views.panels import private_htmx
from store import caching
from store.selectors.overview import store_overview


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def index(request: HtmxHttpRequest) -> HttpResponse:
    # Shared by everyone like panel data, and refreshed off the request path when a
    # write makes it stale (a viewer who just wrote reads it fresh).
    overview = caching.get_or_compute(
        "overview:1",
        lambda: store_overview(low_stock_threshold=settings.STOREOPS_LOW_STOCK_THRESHOLD),
        ttl=30,
        stale_ttl=300,
        namespaces=("stock", "lowstock", "orders", "sales", "catalog"),
        counter="overview",
    ).value
    # Panels load themselves after the page (hx-trigger="load"), with the
    # parameters this URL carries for them.
    frames = panels.frames(request.GET)
    return render(request, "dashboard/index.html", {"overview": overview, "frames": frames})


@login_not_required
@never_cache
@require_GET
def healthz(request: HtmxHttpRequest) -> JsonResponse:
    """Liveness: the process answers. Database state belongs to /readyz."""
    return JsonResponse({"status": "ok"})
