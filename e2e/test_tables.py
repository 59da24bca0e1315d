"""In a real browser: sorting, filtering and paging swap only the table and push the URL;
the CSV export downloads as a file."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Page, expect

from conftest import PASSWORD
from store.tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def products():
    shop, category = f.shop("North"), f.category("Tools")
    made = [
        f.product(
            shop=shop,
            category=category,
            name=f"{'Sprocket' if n < 10 else 'Widget'} {n:02d}",
            price=100 * (40 - n),
        )
        for n in range(30)
    ]
    made.append(f.product(shop=shop, category=category, name="Lonely kite", price=5000))
    return made


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill("viewer")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def first_cell_names(page: Page) -> list[str]:
    return page.locator("table[data-table=products] tbody tr td:nth-child(2)").all_inner_texts()


def test_sort_filter_page_and_download_csv(page: Page, live_server, viewer, products) -> None:
    base = live_server.url
    log_in(page, base)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Products").click()
    expect(page.get_by_role("heading", name="Products")).to_be_visible()
    # A marker on the page survives only if the table is swapped, not the page reloaded.
    page.evaluate("window.__notReloaded = true")

    # Sort by price (ascending): the cheapest widget comes first, the URL says so.
    page.locator("a[data-sort=price]").click()
    expect(page).to_have_url(re.compile(r"/products/\?sort=price$"))
    expect(page.locator("th[aria-sort=ascending] a[data-sort=price]")).to_be_visible()
    assert first_cell_names(page)[0] == "Widget 29"

    # Page 2 of 25-row pages holds the six most expensive rows.
    page.get_by_role("link", name="Next").click()
    expect(page.get_by_test_id("page-number")).to_have_text("Page 2 of 2")
    expect(page).to_have_url(re.compile(r"sort=price&page=2"))
    assert first_cell_names(page)[-1] == "Lonely kite"

    # Typing a filter keeps the sort, goes back to page 1 and narrows the rows.
    page.get_by_label("Search").fill("sprocket")
    expect(page.get_by_test_id("result-count")).to_have_text("10 results")
    expect(page).to_have_url(re.compile(r"\?q=sprocket&.*sort=price"))
    assert first_cell_names(page) == [f"Sprocket {n:02d}" for n in range(9, -1, -1)]
    assert page.evaluate("window.__notReloaded") is True

    # The page size select re-queries at once (no submit button needed with JS).
    page.get_by_label("Rows per page").select_option("50")
    expect(page).to_have_url(re.compile(r"per_page=50"))
    expect(page.get_by_test_id("page-number")).to_have_text("Page 1 of 1")

    # The export link downloads exactly the filtered, sorted rows.
    with page.expect_download() as info:
        page.locator("a[data-export=csv]").click()
    download = info.value
    assert re.fullmatch(r"products-\d{8}T\d{6}Z\.csv", download.suggested_filename)
    with open(download.path(), encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert [r["name"] for r in rows] == [f"Sprocket {n:02d}" for n in range(9, -1, -1)]
    assert rows[0]["price"] == "31.00"


def test_back_button_restores_the_previous_table(page: Page, live_server, viewer, products):
    base = live_server.url
    log_in(page, base)
    page.goto(f"{base}/products/")
    page.locator("a[data-sort=price]").click()
    expect(page).to_have_url(re.compile(r"sort=price$"))
    page.go_back()
    expect(page).to_have_url(f"{base}/products/")
    expect(page.locator("table[data-table=products] tbody tr").first).to_contain_text("Sprocket 00")


def test_fast_typing_settles_on_the_last_query(page: Page, live_server, viewer, products):
    """Debounced input plus hx-sync "replace": a keystroke burst ends on the final text,
    never on a stale, slower answer, and does not fire a request per key."""
    base = live_server.url
    log_in(page, base)
    page.goto(f"{base}/products/")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.headers.get("hx-request") else None)
    page.get_by_label("Search").press_sequentially("lonely kite", delay=60)
    expect(page.get_by_test_id("result-count")).to_have_text("1 result")
    expect(page).to_have_url(re.compile(r"q=lonely(\+|%20)kite&"))
    assert first_cell_names(page) == ["Lonely kite"]
    assert 1 <= len(sent) < len("lonely kite")
