"""Dashboard panels as HTMX partials, and the query inspector behind them."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django import forms
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpResponse, QueryDict
from django.urls import reverse
from django.views.decorators.http import require_GET

from dashboard import panel_runs, panels
from dashboard.access import permission_required
from dashboard.http import HtmxHttpRequest, private_htmx, render_partial_or_page, wants_partial
from store import querylog

INSPECTOR = "dashboard/inspector.html"


def _push_url(request: HtmxHttpRequest, run: panel_runs.PanelRun) -> str | None:
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
    user = request.user
    # The partial renders alone: every permission it shows by comes from here, and
    # only the flags the panel declares reach it (an undeclared one reads as false,
    # so no button appears by mistake). Its cached fragment is per user and goes
    # stale when permissions change ("access"); its shared rendering is keyed on
    # these flags (PanelRun.shows).
    shows = {flag: user.has_perm(panels.BUTTON_PERMISSIONS[flag]) for flag in found.buttons}
    shows["can_inspect"] = user.is_superuser
    run = panel_runs.start(found, request.GET, user, shows=shows)
    plain = run.plain(wants_partial(request))
    kept = run.kept_answer() if plain else None
    if kept is not None:
        # A warm poll: this user's whole panel as it was last rendered for them.
        response = HttpResponse(kept)
    else:
        context = {"run": run, **shows}
        response = render_partial_or_page(
            request, panel_runs.PANEL_PARTIAL, context, page="dashboard/panel_page.html"
        )
    push = _push_url(request, run) if wants_partial(request) else None
    if push:
        response["HX-Push-Url"] = push
    run.finish(section=response.content if plain else None)
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
    context = {"log": log, "rows": log.flags()}
    return render_partial_or_page(request, f"{INSPECTOR}#queries", context)


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
    return render_partial_or_page(request, f"{INSPECTOR}#plan", context, status=status)
