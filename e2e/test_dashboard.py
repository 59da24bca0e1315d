"""The dashboard in a real browser: panels load, parameters re-render and push the URL."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from conftest import PASSWORD
from dashboard.panels import PANELS
from store.tests import factories

# All databases: the shard-health panel probes the shards too.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def logged_in(page: Page, live_server, operator: User) -> Page:
    shop, category = factories.shop("Main"), factories.category("Tools")
    low = factories.product(shop=shop, category=category, stock=1, name="Low hammer")
    factories.product(shop=shop, category=category, stock=4, name="Four nails")
    factories.order(shop=shop, lines=[(low, 2)], paid=True)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(operator.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    return page


def test_the_dashboard_loads_every_panel(logged_in: Page) -> None:
    page = logged_in
    for name in PANELS:
        panel = page.locator(f'[data-panel="{name}"]')
        expect(panel).to_have_attribute("data-state", "loaded")
    expect(page.locator('[data-panel="low-stock"]')).to_contain_text("Low hammer")
    expect(page.locator('[data-panel="trending"]')).to_contain_text("Low hammer")
    expect(page.locator('[data-panel="outbox"]')).to_contain_text("Computed")


def test_a_threshold_change_rerenders_the_panel_and_updates_the_url(
    logged_in: Page, live_server
) -> None:
    page = logged_in
    panel = page.locator('[data-panel="low-stock"]')
    expect(panel).to_contain_text("Four nails")
    panel.get_by_text("Options").click()  # panel options sit behind a disclosure
    threshold = panel.get_by_label("Threshold (units)")
    threshold.fill("2")
    threshold.press("Enter")
    expect(page).to_have_url(re.compile(r"/\?.*low-stock-threshold=2"))
    expect(panel).to_contain_text("at or under 2")
    expect(panel).not_to_contain_text("Four nails")
    expect(panel).to_contain_text("Low hammer")
    # The pushed URL is shareable: opening it renders the panel with that threshold.
    page.goto(page.url)
    expect(page.locator('[data-panel="low-stock"]')).to_contain_text("at or under 2")


def test_bad_input_shows_a_message_in_the_panel(logged_in: Page, live_server) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/?rank-window-top=99")
    panel = page.locator('[data-panel="rank-window"]')
    expect(panel.get_by_role("alert")).to_contain_text("less than or equal to 20")
    expect(panel).to_contain_text("top 3 by price")


def test_the_refresh_button_reloads_the_panel(logged_in: Page) -> None:
    page = logged_in
    panel = page.locator('[data-panel="trending"]')
    expect(panel.get_by_test_id("cache-state")).to_have_attribute("data-cache", "miss")
    with page.expect_response(re.compile(r"/panels/trending/")) as response:
        panel.get_by_role("button", name="Refresh trending products").click()
    assert response.value.status == 200
    expect(panel.get_by_test_id("cache-state")).to_have_attribute("data-cache", "fragment hit")


def test_a_panel_page_opened_without_htmx_is_a_whole_page(logged_in: Page, live_server) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/panels/shop-activity/")
    expect(page.locator("[data-panel]")).to_have_count(1)
    expect(page.locator('[data-panel="shop-activity"]')).to_contain_text("Main")
    expect(page.get_by_role("link", name="← Dashboard")).to_be_visible()


def _set_visibility(page: Page, state: str) -> None:
    """What the browser does when the tab is hidden or shown again."""
    page.evaluate(
        """(state) => {
          Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
        state,
    )


def test_polling_pauses_while_the_tab_is_hidden(logged_in: Page, live_server) -> None:
    page = logged_in
    page.goto(f"{live_server.url}/?low-stock-every=5")
    panel = page.locator('[data-panel="low-stock"]')
    expect(panel).to_have_attribute("data-state", "loaded")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/panels/low-stock/" in r.url else None)
    _set_visibility(page, "hidden")
    page.wait_for_timeout(6500)  # more than one 5 s interval
    assert requests == []
    with page.expect_request(re.compile(r"/panels/low-stock/")):
        _set_visibility(page, "visible")  # console.js refreshes the panels at once
    expect(panel).to_have_attribute("data-state", "loaded")
