"""The dashboard's page controls (issue 12): one time range and one refresh picker in
the URL that every panel follows; panel options behind a disclosure; new panels."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from dashboard.panels import PANELS
from store.tests import factories

pytestmark = pytest.mark.django_db(databases="__all__")
HX = {"HTTP_HX_REQUEST": "true"}


def _frames(client: Client, query: str) -> dict[str, dict[str, list[str]]]:
    body = client.get(f"/?{query}").content.decode()
    found = {}
    for name, url in re.findall(r'data-panel="([\w-]+)"[^>]*\s+hx-get="([^"]+)"', body):
        found[name] = parse_qs(urlsplit(url.replace("&amp;", "&")).query)
    assert set(found) == set(PANELS)
    return found


def test_the_refresh_picker_sets_every_panels_interval(viewer_client: Client) -> None:
    frames = _frames(viewer_client, "refresh=1m&low-stock-threshold=3")
    assert all(q[f"{name}-every"] == ["60"] for name, q in frames.items())
    assert frames["low-stock"]["low-stock-threshold"] == ["3"]
    off = _frames(viewer_client, "refresh=off")
    assert all(q[f"{name}-every"] == ["0"] for name, q in off.items())
    # "auto": each panel keeps its own interval (and its own URL value).
    auto = _frames(viewer_client, "low-stock-every=5")
    assert auto["low-stock"]["low-stock-every"] == ["5"]
    assert "shard-health-every" not in auto["shard-health"]


def test_the_time_range_reaches_every_time_based_panel(viewer_client: Client) -> None:
    frames = _frames(viewer_client, "range=7d")
    assert frames["trending"]["trending-window"] == ["7d"]
    assert frames["sales-series"]["sales-series-range"] == ["7d"]
    assert frames["stock-series"]["stock-series-range"] == ["7d"]
    custom = _frames(viewer_client, "range=custom&start=2026-11-01&end=2026-11-05")
    assert custom["sales-series"]["sales-series-start"] == ["2026-11-01"]
    assert custom["stock-series"]["stock-series-end"] == ["2026-11-05"]
    assert custom["trending"]["trending-window"] == ["30d"]  # its widest rolling window


def test_a_bad_custom_range_says_so_and_shows_24_hours(viewer_client: Client) -> None:
    response = viewer_client.get("/?range=custom&start=2026-11-05&end=2026-11-01")
    assert response.status_code == 200
    body = response.content.decode()
    assert "The range ends before it starts. Showing the last 24 hours." in body
    assert 'sales-series-range=24h"' in body
    # Too long, and missing a date: the same.
    assert (
        b"at most 90 days"
        in viewer_client.get("/?range=custom&start=2026-01-01&end=2026-11-01").content
    )
    assert b"needs both dates" in viewer_client.get("/?range=custom&start=2026-11-01").content


def test_panel_options_sit_behind_a_disclosure_without_refresh_inputs(
    viewer_client: Client,
) -> None:
    body = viewer_client.get("/panels/low-stock/", **HX).content.decode()
    assert re.search(r'<details class="panel-options"[^>]*><summary>Options</summary>', body)
    assert "Threshold (units)" in body
    assert "Refresh every (s)" not in body  # the page's picker sets it: a hidden field
    assert 'type="hidden" name="low-stock-every" value="15"' in body
    # A panel with nothing to choose has no Options at all.
    assert "panel-options" not in viewer_client.get("/panels/outbox/", **HX).content.decode()


def test_refresh_off_is_shown_and_validated(viewer_client: Client) -> None:
    body = viewer_client.get("/panels/outbox/?outbox-every=0", **HX).content.decode()
    assert 'data-interval="0"' in body
    assert "refresh off" in body
    bad = viewer_client.get("/panels/outbox/?outbox-every=2", **HX).content.decode()
    assert "greater than or equal to 5 (0 turns it off)" in bad


def test_sales_series_filters_by_shop(viewer_client: Client) -> None:
    main, other = factories.shop("Main"), factories.shop("Other")
    tools = factories.category("Tools")
    hammer = factories.product(shop=main, category=tools, price=1000)
    saw = factories.product(shop=other, category=tools, price=2500)
    factories.order(shop=main, lines=[(hammer, 1)], paid=True)
    factories.order(shop=other, lines=[(saw, 1)], paid=True)
    every = viewer_client.get("/panels/sales-series/", **HX).content.decode()
    assert '<option value="0" selected>All shops</option>' in every
    assert re.search(r'data-testid="sales-total-orders">2<', every)
    assert "<title>" in every
    assert "Data as a table" in every
    one = viewer_client.get(f"/panels/sales-series/?sales-series-shop={other.pk}", **HX)
    assert re.search(r'data-testid="sales-total-orders">1<', one.content.decode())
    assert "25.00 net revenue" in one.content.decode()


def test_headline_figures_are_a_panel_that_follows_writes(viewer_client: Client) -> None:
    body = viewer_client.get("/panels/headline/", **HX).content.decode()
    assert 'data-testid="figure-units"' in body
    assert "stock-changed from:body, order-paid from:body, order-cancelled from:body" in body
    assert "vs a day earlier" in body


def test_every_headline_card_draws_its_day_and_colours_bad_news_red(
    viewer_client: Client,
) -> None:
    tools = factories.category("Tools")
    factories.product(shop=factories.shop("Main"), category=tools, stock=0)  # new, out
    body = viewer_client.get("/panels/headline/", **HX).content.decode()
    for key in ("products", "units", "low-stock", "out-of-stock", "open-orders"):
        assert f'data-testid="change-{key}"' in body, key
    assert body.count('class="sparkline"') == 7
    # A new product is good news; one more product out of stock is not.
    assert re.search(r'text-success-emphasis" data-testid="change-products">\+1 ', body)
    assert re.search(r'text-danger-emphasis" data-testid="change-out-of-stock">\+1 ', body)


def test_staleness_hooks_are_rendered(viewer_client: Client) -> None:
    body = viewer_client.get("/panels/category-stats/", **HX).content.decode()
    assert 'data-testid="panel-age" data-computed-at="' in body
    assert "data-panel-status" in body
    assert 'hx-swap="morph"' in body
    page = viewer_client.get("/").content.decode()
    assert 'data-testid="status-summary"' in page
    assert "idiomorph-ext.min.js" in page


def _selected(body: str, select_id: str) -> str:
    select = re.search(rf'<select[^>]*id="{select_id}".*?</select>', body, re.S)
    assert select, select_id
    chosen = re.search(r'<option value="([^"]*)"[^>]*selected', select.group(0))
    return chosen.group(1) if chosen else ""


def test_the_controls_show_each_urls_own_values_from_the_cache(
    viewer_client: Client, operator_client: Client
) -> None:
    # The rendered controls are cached by query string: a second URL, a second
    # user and a repeat of the first each show what their own URL says.
    for _ in range(2):
        week = viewer_client.get("/?range=7d&refresh=1m&low-stock-threshold=3").content.decode()
        assert _selected(week, "page-range") == "7d"
        assert _selected(week, "page-refresh") == "1m"
        assert '<input type="hidden" name="low-stock-threshold" value="3">' in week
        day = operator_client.get("/").content.decode()
        assert _selected(day, "page-range") != "7d"  # none: the browser shows 24 h, the first
        assert 'name="low-stock-threshold"' not in day
        custom = viewer_client.get("/?range=custom&start=2026-11-01&end=2026-11-05")
        assert 'value="2026-11-01"' in custom.content.decode()
