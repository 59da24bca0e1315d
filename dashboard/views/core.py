"""The dashboard page and the liveness probe."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard import panel_runs
from dashboard.access import permission_required
from dashboard.forms import PageControlsForm
from dashboard.http import HtmxHttpRequest, private_htmx


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def index(request: HtmxHttpRequest) -> HttpResponse:
    # The page's controls: one time range and one refresh picker, from the URL.
    page_form = PageControlsForm(request.GET)
    page, problems = page_form.values()
    # Panels (the headline figures included) load themselves after the page
    # (hx-trigger="load"), with the parameters this URL carries for them.
    frames = panel_runs.frames(request.GET, page)
    kept = [(k, v) for k, v in request.GET.items() if k not in PageControlsForm.base_fields]
    context = {
        "frames": frames,
        "page": page,
        "page_form": page_form,
        "page_problems": problems,
        "kept_params": kept,
    }
    return render(request, "dashboard/index.html", context)


@login_not_required
@never_cache
@require_GET
def healthz(request: HtmxHttpRequest) -> JsonResponse:
    """Liveness: the process answers. Database state belongs to /readyz."""
    return JsonResponse({"status": "ok"})
