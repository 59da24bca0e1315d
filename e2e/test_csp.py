"""The Content-Security-Policy in a real browser: the admin works under it, and the
suite's violation check (e2e/conftest.py) really catches a violation."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from conftest import PASSWORD
from store.tests import factories

# The dashboard reads the shards too.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_the_admin_works_under_the_policy(page: Page, live_server, superuser) -> None:
    shop, category = factories.shop(), factories.category()
    product = factories.product(shop=shop, category=category, name="Admin Lamp")
    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    page.goto(f"{live_server.url}/admin/store/product/")
    expect(page.get_by_role("link", name="Admin Lamp")).to_be_visible()
    # The change list's JavaScript runs: ticking a row enables the action bar's counter.
    page.locator("input.action-select").first.check()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    page.goto(f"{live_server.url}/admin/store/product/{product.pk}/change/")
    expect(page.get_by_role("button", name="Save", exact=True)).to_be_visible()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")


def test_the_suite_catches_a_violation(page: Page, live_server, request) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.evaluate("document.body.setAttribute('style', 'color: red')")  # an inline style
    page.wait_for_timeout(200)
    caught = request.node.csp_violations
    assert any("style-src" in text for text in caught), caught
    caught.clear()  # expected here: the check must not fail this test
