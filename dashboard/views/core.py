"""The dashboard page and the liveness probe."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse, QueryDict
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard import panel_runs
from dashboard.access import permission_required
from dashboard.forms import PageControlsForm
from dashboard.http import HtmxHttpRequest, private_htmx


class _PageBody:
    """What the dashboard's body shows, computed on first use: the body is rendered
    from the cache (it depends on the query string alone), so a warm page parses no
    form and points no frame."""

    def __init__(self, query: QueryDict) -> None:
        self.query = query

    @cached_property
    def form(self) -> PageControlsForm:
        # The page's controls: one time range and one refresh picker, from the URL.
        return PageControlsForm(self.query)

    @cached_property
    def _values(self) -> tuple[dict[str, Any], list[str]]:
        return self.form.values()

    @property
    def values(self) -> dict[str, Any]:
        return self._values[0]

    @property
    def problems(self) -> list[str]:
        return self._values[1]

    @cached_property
    def frames(self) -> list[panel_runs.Frame]:
        # Panels (the headline figures included) load themselves after the page
        # (hx-trigger="load"), with the parameters this URL carries for them.
        return panel_runs.frames(self.query, self.values)

    @property
    def kept_params(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.query.items() if k not in PageControlsForm.base_fields]


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def index(request: HtmxHttpRequest) -> HttpResponse:
    # The body's cached rendering varies on the query string, never on the user.
    context = {"body": _PageBody(request.GET), "body_vary": request.GET.urlencode()}
    return render(request, "dashboard/index.html", context)


@login_not_required
@never_cache
@require_GET
def healthz(request: HtmxHttpRequest) -> JsonResponse:
    """Liveness: the process answers. Database state belongs to /readyz."""
    return JsonResponse({"status": "ok"})
