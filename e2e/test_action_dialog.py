"""Action forms open where the click was, take focus, close on Esc, confirm with a toast."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Locator, Page, expect

from store.models import OutboxEvent, Product
from store.services.outbox import outbox_enqueue
from store.services.stock import stock_adjust
from store.tests import factories

# The dashboard reads the shards too.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

SIZES = {"desktop": (1440, 900), "phone": (390, 844)}


def _sign_in(page: Page, live_server, user: User) -> None:
    client = Client()
    client.force_login(user)
    page.context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )


def _inside_viewport(page: Page, element: Locator) -> None:
    box = element.bounding_box()
    assert box is not None
    size = page.viewport_size
    assert size is not None
    assert box["x"] >= 0, box
    assert box["y"] >= 0, box
    assert box["x"] + box["width"] <= size["width"], (box, size)
    assert box["y"] + box["height"] <= size["height"], (box, size)


@pytest.fixture
def skillet() -> Product:
    shop, category = factories.shop(), factories.category()
    # Enough low-stock rows that the skillet's button sits well down the panel.
    for n in range(12):
        factories.product(shop=shop, category=category, stock=1, name=f"Filler {n}")
    return factories.product(shop=shop, category=category, stock=4, name="Vintage Skillet 97")


@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
def test_the_adjust_form_opens_at_the_click_takes_focus_and_closes_on_esc(
    page: Page, live_server, operator, skillet, size: str
) -> None:
    page.set_viewport_size(dict(zip(("width", "height"), SIZES[size], strict=True)))
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    # Panels above it load in any order and push it down until they have.
    expect(page.locator('[data-panel][data-state="loading"]')).to_have_count(0)
    button = page.locator('[data-panel="low-stock"]').get_by_role(
        "button", name="Adjust Vintage Skillet 97", exact=True
    )
    # Centred the way a reader's scroll leaves it: scrolled only "if needed" it sits on the
    # viewport's bottom edge, where a sub-pixel reflow counts as leaving the screen. Instant,
    # because Bootstrap makes the root scroll smoothly.
    button.evaluate("e => e.scrollIntoView({block: 'center', behavior: 'instant'})")
    _inside_viewport(page, button)
    before = button.bounding_box()
    assert before is not None
    # Severity badges stay readable (they were 10.5 px inside the small table).
    badge = page.locator('[data-panel="low-stock"] tbody .badge').first
    assert badge.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 11
    button.click()
    dialog = page.get_by_role("dialog", name="Adjust stock: Vintage Skillet 97")
    expect(dialog).to_be_visible()
    _inside_viewport(page, dialog)
    # The page did not jump away from the click.
    _inside_viewport(page, button)
    after = button.bounding_box()
    assert after is not None
    assert abs(after["y"] - before["y"]) <= 2, (before, after)
    expect(dialog.get_by_label("Change")).to_be_focused()
    # What the operator needs to decide.
    expect(dialog.get_by_test_id("current-stock")).to_have_text("4")
    expect(dialog.get_by_test_id("low-stock-threshold")).to_have_text("5")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("[data-action='adjust']")).to_have_count(0)


def test_the_form_from_a_table_row_opens_in_view_and_cancel_closes_it(
    page: Page, live_server, operator, skillet
) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/products/")
    link = page.get_by_role("link", name="Adjust Vintage Skillet 97", exact=True)
    link.scroll_into_view_if_needed()
    link.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    _inside_viewport(page, dialog)
    expect(dialog.get_by_label("Change")).to_be_focused()
    dialog.get_by_role("link", name="Cancel").click()
    expect(dialog).to_be_hidden()


def test_the_form_shows_the_last_ledger_lines(page: Page, live_server, operator, skillet) -> None:
    for n in range(6):
        stock_adjust(product=skillet.pk, delta=1, actor=operator, reason=f"count {n}")
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/products/")
    page.get_by_role("link", name="Adjust Vintage Skillet 97", exact=True).click()
    lines = page.get_by_role("dialog").get_by_test_id("recent-movements").get_by_role("row")
    expect(lines).to_have_count(6)  # a header and the last five
    expect(lines.nth(1)).to_contain_text("count 5")
    expect(page.get_by_role("dialog").get_by_text("count 0")).to_have_count(0)


def test_success_closes_the_form_and_shows_a_toast(
    page: Page, live_server, operator, skillet
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/")
    panel = page.locator('[data-panel="low-stock"]')
    panel.get_by_role("button", name="Adjust Vintage Skillet 97", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Change").fill("10")
    dialog.get_by_role("button", name="Apply adjustment").click()
    expect(dialog).to_be_hidden()
    toast = page.locator("[data-toasts]").get_by_role("status")
    expect(toast).to_contain_text("Vintage Skillet 97: stock 4 → 14 (+10).")
    # stock-changed refreshed the panel: 14 is no longer low.
    expect(panel.get_by_role("row").filter(has_text="Vintage Skillet 97")).to_have_count(0)
    skillet.refresh_from_db()
    assert skillet.stock == 14


def test_the_changed_row_is_highlighted_after_the_table_refreshes(
    page: Page, live_server, operator, skillet
) -> None:
    _sign_in(page, live_server, operator)
    page.goto(f"{live_server.url}/products/")
    page.get_by_role("link", name="Adjust Vintage Skillet 97", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Change").fill("2")
    dialog.get_by_role("button", name="Apply adjustment").click()
    row = page.locator(f'[data-table="products"] tr[data-row-id="{skillet.pk}"]')
    # The refreshed row shows the new stock and is marked for a moment.
    expect(row.get_by_role("link", name="6 units")).to_be_visible()
    expect(row).to_have_class("row-changed")


def test_a_requeue_button_names_the_event_it_requeues(page: Page, live_server, superuser) -> None:
    # Ten dead letters look alike; a screen reader hears which one each button requeues.
    with transaction.atomic():
        event = outbox_enqueue(topic="stock.changed", key="product:41", payload={})
    OutboxEvent.objects.filter(pk=event.pk).update(
        dead_lettered_at=timezone.now(), attempts=5, last_error="broker down"
    )
    _sign_in(page, live_server, superuser)
    page.goto(f"{live_server.url}/")
    panel = page.locator('[data-panel="outbox"]')
    panel.get_by_role("button", name="Requeue stock.changed product:41", exact=True).click()
    expect(panel.get_by_role("status")).to_contain_text("requeued")
    event.refresh_from_db()
    assert event.dead_lettered_at is None
