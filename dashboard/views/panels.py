"""Dashboard panels as HTMX partials, and the query inspector behind them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from django import forms
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.views.decorators.http import require_GET

from dashboard import panels
from dashboard.access import permission_required
from dashboard.http import HtmxHttpRequest
from store import querylog


def private_htmx(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Per-user pages whose body depends on HX-Request: no shared caches, and a
    partial and a full page of one URL never share a browser cache entry."""

    @functools.wraps(view)
    def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        patch_cache_control(response, private=True)
        patch_vary_headers(response, ("Cookie", "HX-Request"))
        return response

    return wrapped


def _wants_partial(request: HtmxHttpRequest) -> bool:
    # A history restore must get a whole page, never a bare partial.
    return bool(request.htmx) and not request.htmx.history_restore_request


def _push_url(request: HtmxHttpRequest, run: panels.PanelRun) -> str | None:
    """The URL to show after the user changed a panel's parameters, so the view
    can be shared: the dashboard URL with this panel's parameters replaced, or
    the panel's own page when it is open alone. Polling pushes nothing."""
    if not (request.htmx.trigger or "").startswith(f"{run.name}-controls"):
        return None
    try:
        current = urlsplit(request.htmx.current_url or "")
    except ValueError:  # a malformed header ("http://[::1"): answer, push nothing
        return None
    index = reverse("dashboard-index")
    if current.path != index:
        return run.url
    kept = [(k, v) for k, v in QueryDict(current.query).items() if not k.startswith(f"{run.name}-")]
    return (
        f"{index}?{urlencode(kept)}&{run.query_string}" if kept else f"{index}?{run.query_string}"
    )


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def panel(request: HtmxHttpRequest, name: str) -> HttpResponse:
    found = panels.get_panel(name)
    if found is None:
        raise Http404(f"There is no panel named {name!r}.")
    run = panels.start(found, request.GET, request.user)
    context = {
        "run": run,
        "can_adjust": request.user.has_perm("store.adjust_stock"),
        "can_inspect": request.user.is_superuser,
    }
    if _wants_partial(request):
        response = render(request, panels.PANEL_PARTIAL, context)
        push = _push_url(request, run)
        if push:
            response["HX-Push-Url"] = push
    else:
        context["partial"] = panels.PANEL_PARTIAL
        response = render(request, "dashboard/panel_page.html", context)
    run.finish()
    return response


def _superuser_log(request: HtmxHttpRequest, log_id: str) -> querylog.QueryLog:
    if not request.user.is_superuser:
        raise PermissionDenied("Only superusers can read recorded SQL.")
    log = querylog.load(log_id)
    if log is None:
        raise Http404("That query record has expired; refresh the panel and try again.")
    return log


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def query_log(request: HtmxHttpRequest, log_id: str) -> HttpResponse:
    log = _superuser_log(request, log_id)
    template = (
        "dashboard/inspector.html#queries"
        if _wants_partial(request)
        else ("dashboard/inspector.html")
    )
    return render(request, template, {"log": log, "rows": log.flags()})


class ExplainForm(forms.Form):
    analyze = forms.BooleanField(required=False)


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def query_explain(request: HtmxHttpRequest, log_id: str, index: int) -> HttpResponse:
    log = _superuser_log(request, log_id)
    if not 0 <= index < len(log.queries):
        raise Http404("No such query in that record.")
    form = ExplainForm(request.GET)
    analyze = form.is_valid() and form.cleaned_data["analyze"]
    record = log.queries[index]
    status = 200
    try:
        plan, error = querylog.explain(record, analyze=analyze), ""
    except ValueError as exc:
        plan, error, status = [], str(exc), 422
    except DatabaseError as exc:
        plan, error, status = [], f"EXPLAIN failed: {exc}", 422
    context = {"log": log, "index": index, "record": record, "plan": plan, "error": error}
    context["analyze"] = analyze
    template = (
        "dashboard/inspector.html#plan" if _wants_partial(request) else ("dashboard/inspector.html")
    )
    return render(request, template, context, status=status)
