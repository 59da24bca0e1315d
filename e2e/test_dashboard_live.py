"""The dashboard kept open all day (issue 12), in a real browser: page controls in the
URL, polls that keep the user's place, loud staleness, live headline figures, and a
layout that hides nothing at 1440 px and at 390 px."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from playwright.sync_api import Page, expect

from dashboard.panels import PANELS
from store.tests import factories

# All databases: the shard-health panel probes the shards too.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _sign_in(page: Page, live_server, user: User) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )


@pytest.fixture
def store() -> None:
    shop, category = factories.shop("Main"), factories.category("Tools")
    # Enough low-stock rows that the list scrolls inside its panel.
    for i in range(40):
        factories.product(shop=shop, category=category, stock=i % 5, name=f"Low item {i:02d}")
    hammer = factories.product(shop=shop, category=category, stock=50, name="Hammer")
    factories.order(shop=shop, lines=[(hammer, 2)], paid=True)


def _all_loaded(page: Page) -> None:
    for name in PANELS:
        expect(page.locator(f'[data-panel="{name}"]')).to_have_attribute("data-state", "loaded")


def test_refresh_picker_and_time_range_change_every_panel_and_the_url(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    _all_loaded(page)
    page.get_by_label("Refresh", exact=True).select_option("1m")
    expect(page).to_have_url(re.compile(r"/\?.*refresh=1m"))
    for name in PANELS:
        expect(page.locator(f'[data-panel="{name}"]')).to_have_attribute("data-interval", "60")
    page.get_by_label("Time range").select_option("7d")
    expect(page).to_have_url(re.compile(r"/\?.*range=7d"))
    expect(page).to_have_url(re.compile(r"refresh=1m"))
    expect(page.locator('[data-panel="trending"]')).to_contain_text("over the last 7d")
    expect(page.locator('[data-panel="sales-series"]')).to_contain_text("the last 7 days, per day")
    expect(page.locator('[data-panel="stock-series"]')).to_contain_text("the last 7 days")
    for name in PANELS:
        expect(page.locator(f'[data-panel="{name}"]')).to_have_attribute("data-interval", "60")
    # A custom range: the dates appear, and the URL carries them.
    page.get_by_label("Time range").select_option("custom")
    page.get_by_label("From", exact=True).fill("2026-11-01")
    page.get_by_label("To", exact=True).fill("2026-11-02")
    expect(page).to_have_url(re.compile(r"range=custom&start=2026-11-01&end=2026-11-02"))
    expect(page.locator('[data-panel="sales-series"]')).to_contain_text("2026-11-01 to 2026-11-02")
    # Shared: opening the URL shows the same view.
    page.goto(page.url)
    expect(page.locator('[data-panel="stock-series"]')).to_contain_text("2026-11-01 to 2026-11-02")


def test_a_poll_keeps_the_scroll_position_and_open_details(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/?refresh=5s")
    _all_loaded(page)
    low = page.locator('[data-panel="low-stock"]')
    scroller = low.locator(".panel-scroll")
    scroller.evaluate("el => { el.scrollTop = 150; }")
    low.get_by_text("Options").click()
    health = page.locator('[data-panel="shard-health"]')
    health.get_by_text("Status thresholds").click()
    expect(health.locator("details").filter(has_text="Status thresholds")).to_have_attribute(
        "open", ""
    )
    for _ in range(2):  # two polls of each
        with page.expect_response(re.compile(r"/panels/low-stock/")):
            pass
        with page.expect_response(re.compile(r"/panels/shard-health/")):
            pass
    page.wait_for_timeout(300)  # the swap settles
    # Morphing never leaves a panel inside another (a reused node's pending request
    # once swapped a whole panel into a hidden span).
    expect(page.locator("[data-panel] [data-panel]")).to_have_count(0)
    for name in PANELS:
        expect(page.locator(f'[data-panel="{name}"]')).to_have_count(1)
    assert scroller.evaluate("el => el.scrollTop") == 150
    expect(low.locator("details.panel-options")).to_have_attribute("open", "")
    expect(health.locator("details").filter(has_text="Status thresholds")).to_have_attribute(
        "open", ""
    )


def test_no_refresh_lands_while_typing_in_a_panel(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/?refresh=5s")
    _all_loaded(page)
    low = page.locator('[data-panel="low-stock"]')
    low.get_by_text("Options").click()
    threshold = low.get_by_label("Threshold (units)")
    threshold.focus()
    threshold.press("End")
    threshold.type("9", delay=50)  # half-typed: no change event yet
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/panels/low-stock/" in r.url else None)
    page.wait_for_timeout(6500)
    assert requests == []
    expect(threshold).to_have_value(re.compile(r"9$"))


def test_a_failing_panel_shows_a_badge_dims_and_recovers(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    _all_loaded(page)
    # Not "All systems OK": a loaded machine's databases may warn (latency, cache hits).
    summary = page.get_by_test_id("status-summary")
    expect(summary).not_to_contain_text("refresh failed")
    outbox = page.locator('[data-panel="outbox"]')
    expect(outbox.get_by_test_id("panel-age")).to_have_text(re.compile(r"updated \d+ s ago"))
    page.route("**/panels/outbox/**", lambda route: route.fulfill(status=500, body="boom"))
    outbox.get_by_role("button", name="Refresh outbox").click()
    expect(outbox.get_by_test_id("stale-badge")).to_contain_text("refresh failed: HTTP 500")
    expect(outbox).to_have_attribute("data-stale", "true")
    opacity = outbox.locator(".panel-body").evaluate("el => getComputedStyle(el).opacity")
    assert float(opacity) < 0.6
    expect(page.get_by_test_id("status-summary")).to_contain_text("Outbox: refresh failed")
    expect(page.locator('[data-panel="outbox"]')).to_contain_text("Backlog")  # old data kept
    page.unroute("**/panels/outbox/**")
    outbox.get_by_role("button", name="Refresh outbox").click()
    expect(outbox.get_by_test_id("stale-badge")).to_have_count(0)
    expect(outbox).not_to_have_attribute("data-stale", "true")
    expect(summary).not_to_contain_text("refresh failed")


def test_shard_health_goes_grey_when_its_request_fails(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    _all_loaded(page)
    health = page.locator('[data-panel="shard-health"]')
    expect(health.locator('tr[data-alias="default"]')).to_have_attribute("data-status", "ok")
    page.route("**/panels/shard-health/**", lambda route: route.abort())
    health.get_by_role("button", name="Refresh shard health").click()
    expect(health.get_by_test_id("stale-badge")).to_contain_text("no connection")
    rows = health.locator("tr[data-alias]")
    for i in range(rows.count()):
        expect(rows.nth(i)).to_have_attribute("data-status", "unknown")
        expect(rows.nth(i).locator(".badge")).to_have_text("unknown")
        expect(rows.nth(i).locator(".badge")).to_have_class(re.compile("text-bg-secondary"))
    # The cache's badge too: the panel vouches for nothing while it cannot be reached.
    cache_health = health.get_by_test_id("cache-health")
    expect(cache_health).to_have_attribute("data-status", "unknown")
    expect(cache_health.locator(".badge")).to_have_text("unknown")


def test_headline_figures_change_after_an_adjustment(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    _all_loaded(page)
    units = page.get_by_test_id("figure-units")
    before = int(units.inner_text().replace(",", ""))
    # The store's products were created this hour, so the change counts their stock too.
    change = page.get_by_test_id("change-units")
    change_before = int(change.inner_text().split()[0].replace(",", "").replace("±", ""))
    row = page.locator('[data-panel="low-stock"]').get_by_role("row").filter(has_text="Low item 00")
    row.get_by_role("button", name="Adjust").click()
    form = page.locator('[data-action="adjust"]')
    form.get_by_label("Change").fill("25")
    form.get_by_label("Reason").fill("delivery")
    form.get_by_role("button", name="Apply adjustment").click()
    expect(units).to_have_text(f"{before + 25:,}")
    expect(change).to_contain_text(f"{change_before + 25:+,} ")


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_nothing_is_hidden_at_desktop_and_phone_widths(
    page: Page, live_server, operator: User, store: None, width: int, height: int
) -> None:
    page.set_viewport_size({"width": width, "height": height})
    _sign_in(page, live_server, operator)
    for path in ("/", "/products/", "/orders/", "/stock/ledger/"):
        page.goto(f"{live_server.url}{path}")
        if path == "/":
            _all_loaded(page)
            # Every panel body, and every scroll box inside one (the tables sit in
            # .table-responsive, which would otherwise hide their overflow from the body).
            overflowing = page.evaluate(
                """() => [...document.querySelectorAll(
                    "[data-panel] .panel-body, [data-panel] .panel-body *")]
                  .filter((b) => b.matches(".panel-body")
                    || (getComputedStyle(b).overflowX !== "visible"
                        && !b.matches(".visually-hidden")))
                  .filter((b) => b.scrollWidth > b.clientWidth)
                  .map((b) => b.closest("[data-panel]").dataset.panel)"""
            )
            if width >= 1440:
                assert overflowing == []
        sideways = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert sideways <= 0, f"{path} scrolls sideways by {sideways}px at {width}px"
    if width < 768:
        # The navbar collapses behind its menu button.
        page.goto(f"{live_server.url}/")
        nav = page.get_by_role("navigation", name="Main")
        assert nav.bounding_box()["height"] < 80
        expect(nav.get_by_role("link", name="Orders")).to_be_hidden()
        nav.get_by_role("button", name="Menu").click()
        expect(nav.get_by_role("link", name="Orders")).to_be_visible()


def test_in_debug_a_failing_panel_stays_in_its_panel(
    page: Page, live_server, operator: User, store: None, settings
) -> None:
    # DEBUG adds django-htmx's script, which would put the error page over everything.
    settings.DEBUG = True
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    _all_loaded(page)
    assert page.locator("script[data-debug]").count() == 1
    page.route(
        "**/panels/outbox/**",
        lambda route: route.fulfill(
            status=500, body="<h1>Traceback of the error page</h1>", content_type="text/html"
        ),
    )
    outbox = page.locator('[data-panel="outbox"]')
    outbox.get_by_role("button", name="Refresh outbox").click()
    expect(outbox.get_by_test_id("stale-badge")).to_contain_text("HTTP 500")
    expect(page.locator("#panels")).to_be_visible()
    expect(page.get_by_text("Traceback of the error page")).to_have_count(0)


def test_a_first_load_is_not_followed_by_an_immediate_poll(
    page: Page, live_server, operator: User, store: None
) -> None:
    # The first load swaps the placeholder out, so its request's events never reach
    # the page; the poll timer must still count the panel as just loaded, not poll it
    # again at the next tick (which also broke "polling pauses while hidden" at random).
    _sign_in(page, live_server, operator)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/panels/" in r.url else None)
    page.goto(f"{live_server.url}/?refresh=1m")
    _all_loaded(page)
    page.wait_for_timeout(2500)  # more than the poll timer's 1 s tick
    per_panel = {name: sum(f"/panels/{name}/" in url for url in requests) for name in PANELS}
    assert per_panel == dict.fromkeys(PANELS, 1)


# The smallest text each chart draws, in CSS pixels: an SVG's text scales with it.
_CHART_TEXT_PX = """() => [...document.querySelectorAll("[data-panel] svg[viewBox]")]
  .filter((svg) => svg.querySelector("text"))
  .map((svg) => {
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    const sizes = [...svg.querySelectorAll("text")]
      .map((t) => Number(t.getAttribute("font-size")));
    const px = Math.round(scale * Math.min(...sizes) * 10) / 10;
    return [svg.closest("[data-panel]").dataset.panel, px];
  })"""


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_chart_labels_stay_readable(
    page: Page, live_server, operator: User, store: None, width: int, height: int
) -> None:
    # Charts scale with their box: squeezed into a narrow panel or a phone, their
    # axis labels and values shrank to 4-6 px.
    page.set_viewport_size({"width": width, "height": height})
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/?refresh=off")
    _all_loaded(page)
    sizes = page.evaluate(_CHART_TEXT_PX)
    assert {name for name, _ in sizes} >= {"category-stats", "sales-series", "stock-series"}
    assert [(name, px) for name, px in sizes if px < 8] == []
    sideways = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert sideways <= 0


def test_pause_stops_polling_and_refresh_now_reloads_every_panel(
    page: Page, live_server, operator: User, store: None
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/?refresh=5s")
    _all_loaded(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/panels/" in r.url else None)
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(6500)  # more than one 5 s interval
    assert requests == []
    page.get_by_role("button", name="Refresh now").click()  # works while paused too
    page.wait_for_timeout(1500)
    assert {name for name in PANELS if any(f"/panels/{name}/" in url for url in requests)} == set(
        PANELS
    )
    _all_loaded(page)
    page.get_by_role("button", name="Resume").click()
    with page.expect_request(re.compile(r"/panels/"), timeout=8000):
        pass
