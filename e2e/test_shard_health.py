"""The shard-health panel in a real browser: every database with a status, live updates."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connections
from playwright.sync_api import Page, expect

from conftest import PASSWORD
from store.tests.test_sharding import make_customer, shard_down

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
# A busy test machine may push latency past the "warn" threshold; never "down".
HEALTHY = re.compile(r"^(ok|warn)$")


@pytest.fixture
def dashboard(page: Page, live_server, viewer: User) -> Page:
    cache.clear()
    for uid in range(1, 9):
        make_customer(uid, value=uid * 1000)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(viewer.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    return page


def test_every_database_is_listed_with_a_status(dashboard: Page) -> None:
    panel = dashboard.locator('[data-panel="shard-health"]')
    expect(panel).to_have_attribute("data-state", "loaded")
    for alias in connections.settings:
        row = panel.locator(f'tr[data-alias="{alias}"]')
        expect(row).to_be_visible()
        expect(row).to_have_attribute("data-status", HEALTHY)
        expect(row.locator(".badge")).to_have_text(HEALTHY)
    expect(panel.get_by_text("Top customers by lifetime value")).to_be_visible()
    expect(panel.locator('[data-testid="partial-results"]')).to_have_count(0)


def test_a_shard_going_down_shows_up_on_the_next_refresh(dashboard: Page) -> None:
    panel = dashboard.locator('[data-panel="shard-health"]')
    expect(panel.locator('tr[data-alias="shard_1"]')).to_have_attribute("data-status", HEALTHY)
    with shard_down("shard_1"):
        # The panel polls every few seconds; no reload of the page.
        expect(panel.locator('tr[data-alias="shard_1"]')).to_have_attribute(
            "data-status", "down", timeout=15_000
        )
        expect(panel.get_by_role("alert").filter(has_text="Partial results")).to_be_visible()
