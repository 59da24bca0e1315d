"""Actions in a real browser: panel refresh after an adjustment, PRG reloads, double clicks."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from playwright.sync_api import Page, expect

from store.models import Product, StockMovement
from store.services.orders import order_place
from store.tests import factories

# The dashboard reads the shards too.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _sign_in(page: Page, live_server, user: User) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )


def _without_javascript(page: Page) -> None:
    """Block htmx so forms submit as plain POSTs, as for a user without JavaScript."""
    page.route("**/*htmx*.js", lambda route: route.abort())


@pytest.fixture
def low_product() -> Product:
    return factories.product(
        shop=factories.shop(), category=factories.category(), stock=2, name="Nearly Gone Lamp"
    )


def test_adjust_from_the_low_stock_panel_refreshes_it_and_trending(
    page: Page, live_server, operator, low_product
) -> None:
    # A paid order today makes the lamp trending too; trending shows its stock.
    factories.order(shop=low_product.shop, lines=[(low_product, 1)], paid=True)
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    panel = page.locator('[data-panel="low-stock"]')
    row = panel.get_by_role("row").filter(has_text="Nearly Gone Lamp")
    expect(row).to_be_visible()
    trending_stock = (
        page.locator('[data-panel="trending"]')
        .get_by_role("row")
        .filter(has_text="Nearly Gone Lamp")
        .get_by_test_id("trending-stock")
    )
    expect(trending_stock).to_have_text("2")
    row.get_by_role("button", name="Adjust").click()
    form = page.locator('[data-action="adjust"]')
    form.get_by_label("Change").fill("10")
    form.get_by_label("Reason").fill("restocked from the back room")
    form.get_by_role("button", name="Apply adjustment").click()
    expect(page.get_by_role("status").filter(has_text="stock 2 → 12 (+10)")).to_be_visible()
    # The stock-changed event made the panel re-read itself: 12 is no longer low.
    expect(panel.get_by_role("row").filter(has_text="Nearly Gone Lamp")).to_have_count(0)
    # ...and trending re-read itself too, showing the new stock.
    expect(trending_stock).to_have_text("12")
    low_product.refresh_from_db()
    assert low_product.stock == 12


def test_reload_after_a_plain_post_does_not_adjust_again(
    page: Page, live_server, operator, low_product
) -> None:
    _without_javascript(page)
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/products/{low_product.pk}/adjust/")
    page.get_by_label("Change").fill("3")
    page.get_by_role("button", name="Apply adjustment").click()
    expect(page.get_by_role("alert").filter(has_text="stock 2 → 5 (+3)")).to_be_visible()
    assert page.url.endswith(f"/products/{low_product.pk}/adjust/")
    page.reload()
    expect(page.get_by_test_id("current-stock")).to_have_text("5")
    low_product.refresh_from_db()
    assert low_product.stock == 5
    assert StockMovement.objects.filter(product=low_product).count() == 1


@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "plain"])
def test_a_double_click_applies_once(
    page: Page, live_server, operator, low_product, javascript: bool
) -> None:
    if not javascript:
        _without_javascript(page)
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/products/{low_product.pk}/adjust/")
    page.get_by_label("Change").fill("-1")
    page.get_by_role("button", name="Apply adjustment").dblclick()
    # Whether one or both clicks reach the server is up to the browser's timing; when
    # both do, the replay's notice repeats the first result, so the text shows twice.
    expect(page.get_by_text("stock 2 → 1 (-1)").first).to_be_visible()
    low_product.refresh_from_db()
    assert low_product.stock == 1
    assert StockMovement.objects.filter(product=low_product).count() == 1


def test_price_change_asks_before_it_applies(page: Page, live_server, superuser) -> None:
    shop, category = factories.shop(name="Corner Shop"), factories.category()
    product = factories.product(shop=shop, category=category, price=1000)
    _sign_in(page, live_server, superuser)
    page.goto(f"{live_server.url}/products/prices/")
    page.get_by_label("Shop").select_option(label="Corner Shop")
    page.get_by_label("Percent").fill("-10")
    page.get_by_role("button", name="Preview change").click()
    expect(page.get_by_test_id("price-preview")).to_contain_text("Change 1 price(s) by -10%")
    product.refresh_from_db()
    assert product.price == 1000
    page.get_by_role("button", name="Confirm price change").click()
    expect(page.get_by_role("status").filter(has_text="1 price(s) changed by -10%")).to_be_visible()
    product.refresh_from_db()
    assert product.price == 900


def test_mark_paid_from_the_orders_table(page: Page, live_server, operator) -> None:
    shop = factories.shop()
    product = factories.product(shop=shop, category=factories.category(), stock=5)
    order = factories.order(shop=shop, lines=[(product, 1)])
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/orders/")
    row = page.locator(f'tr[data-row-id="{order.pk}"]')
    row.get_by_role("link", name="Mark paid").click()
    form = page.locator('[data-action="pay"]')
    expect(form.get_by_test_id("order-status")).to_have_text("open")
    form.get_by_role("button", name="Mark paid").dblclick()
    expect(
        page.get_by_role("status").filter(has_text=f"Order #{order.pk} marked paid.")
    ).to_be_visible()
    # order-paid made the table re-read itself: the row no longer offers the action.
    expect(row.get_by_role("link", name="Mark paid")).to_have_count(0)
    order.refresh_from_db()
    assert order.paid


def test_cancel_from_the_orders_table_restocks_and_refreshes_the_table(
    page: Page, live_server, operator
) -> None:
    shop = factories.shop()
    product = factories.product(shop=shop, category=factories.category(), stock=5)
    order = order_place(user=operator, shop=shop, lines=[(product.pk, 2)])
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/orders/")
    row = page.locator(f'tr[data-row-id="{order.pk}"]')
    row.get_by_role("link", name="Cancel").click()
    form = page.locator('[data-action="cancel"]')
    form.get_by_label("Reason").fill("customer changed their mind")
    form.get_by_role("button", name="Cancel order and restock").dblclick()
    expect(
        page.get_by_role("status").filter(has_text=f"Order #{order.pk} cancelled")
    ).to_be_visible()
    # order-cancelled made the table re-read itself: a cancelled order offers nothing.
    expect(row.get_by_role("link", name="Cancel")).to_have_count(0)
    product.refresh_from_db()
    assert product.stock == 5  # the double click restocked once
    assert StockMovement.objects.filter(order=order, delta=2).count() == 1
