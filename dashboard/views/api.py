"""JSON endpoints: the trending panel's data for other tools."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from dashboard import panel_runs, panels
from dashboard.access import permission_required
from dashboard.http import HtmxHttpRequest, private_htmx


@require_GET
@permission_required("store.view_dashboard")
@private_htmx
def trending(request: HtmxHttpRequest) -> JsonResponse:
    """The trending panel's data, from the very cache entry the panel uses
    (so the same writes invalidate it). Parameter: ``window`` (24h, 7d, 30d)."""
    panel = panels.PANELS["trending"]
    form = panel.form_class(request.GET, interval=panel.interval)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    params, _ = form.params()
    result = panel_runs.load(panel, params)
    if result.error or result.computed is None:
        return JsonResponse({"error": "The trending query failed."}, status=503)
    data = result.computed.value
    return JsonResponse(
        {
            "window": data.window,
            "since": data.since.isoformat(),
            "until": data.until.isoformat(),
            "bucket": data.bucket,
            "computed_at": result.computed.computed_at.isoformat(),
            "cached": result.computed.hit,
            "products": [
                {
                    "id": p.product_id,
                    "name": p.name,
                    "shop": p.shop,
                    "revenue_cents": p.revenue,
                    "units": p.units,
                    "stock": p.stock,
                    "series_cents": p.series,
                }
                for p in data.products
            ],
        }
    )
